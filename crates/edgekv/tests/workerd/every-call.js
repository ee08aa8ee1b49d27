// A Worker that exercises every call of workerd's KV binding against edgekv
// and answers with what each call returned (or the error it threw), for
// tests/workerd.rs to check.
//   GET /every-call   every read type, metadata, expirations, awkward keys,
//                     list pagination, bulk gets, deletes and refusals
//   GET /mixed?round=N  a round of held reads, read-throughs, a write and a
//                     list: {calls, failures: [...]}, for a rollout under load
const awkward = [
  "a+b",
  "dir/x",
  "ünï ✓ 😀",
  "[]^|;=",
  "raw !$&'()*+,-.:;=@[]^_|~",
  "q?x#y%z&w",
  "sp ace",
  "back\\slash`{}<>\"",
];

async function outcome(f) {
  try {
    return { ok: await f() };
  } catch (e) {
    return { error: String(e && e.message ? e.message : e) };
  }
}

async function everyCall(env) {
  const r = {};
  const now = Math.floor(Date.now() / 1000);
  r.now = now;
  // Writes of every value type, then reads of every type.
  r.put_text = await outcome(() => env.KV.put("text", "héllo wörld").then(() => "done"));
  r.get_text = await outcome(() => env.KV.get("text"));
  r.get_text_type = await outcome(() => env.KV.get("text", "text"));
  r.get_text_opts = await outcome(() => env.KV.get("text", { type: "text" }));
  await env.KV.put("json", JSON.stringify({ a: 1, b: [true, null] }));
  r.get_json = await outcome(() => env.KV.get("json", "json"));
  r.get_json_opts = await outcome(() => env.KV.get("json", { type: "json" }));
  await env.KV.put("bytes", new Uint8Array([0, 1, 2, 255]));
  r.get_bytes = await outcome(async () =>
    Array.from(new Uint8Array(await env.KV.get("bytes", "arrayBuffer"))),
  );
  r.get_stream = await outcome(async () =>
    new Response(await env.KV.get("text", "stream")).text(),
  );
  r.put_stream = await outcome(async () => {
    const enc = new TextEncoder();
    const body = new ReadableStream({
      start(c) {
        c.enqueue(enc.encode("streamed "));
        c.enqueue(enc.encode("value"));
        c.close();
      },
    });
    await env.KV.put("streamed", body);
    return env.KV.get("streamed");
  });
  await env.KV.put("empty", "");
  r.get_empty = await outcome(() => env.KV.get("empty"));
  r.get_missing = await outcome(() => env.KV.get("missing"));
  r.get_cache_ttl = await outcome(() => env.KV.get("text", { cacheTtl: 60 }));

  // Metadata, both ways, non-ASCII included.
  await env.KV.put("meta", "v", { metadata: { owner: "ünïcode ✓", n: 5 } });
  r.meta = await outcome(() => env.KV.getWithMetadata("meta"));
  await env.KV.put("meta-str", "v", { metadata: "just text" });
  r.meta_str = await outcome(() => env.KV.getWithMetadata("meta-str", "text"));
  r.meta_json = await outcome(() => env.KV.getWithMetadata("json", { type: "json" }));
  r.meta_missing = await outcome(() => env.KV.getWithMetadata("missing"));
  await env.KV.put("meta-order", "v", { metadata: { z: 1, a: 2, m: 3 } });
  r.meta_order = await outcome(async () =>
    Object.keys((await env.KV.getWithMetadata("meta-order")).metadata),
  );
  r.meta_order_list = await outcome(async () =>
    Object.keys((await env.KV.list({ prefix: "meta-order" })).keys[0].metadata),
  );

  // Expirations: absolute, relative, as a numeric string.
  await env.KV.put("exp-at", "v", { expiration: now + 3600 });
  await env.KV.put("exp-ttl", "v", { expirationTtl: 120 });
  await env.KV.put("exp-str", "v", { expiration: String(now + 7200) });

  // Awkward keys: written, read, listed, deleted.
  r.awkward = {};
  for (const k of awkward) {
    await env.KV.put(k, "value of " + k);
    r.awkward[k] = await env.KV.get(k);
  }

  // A list over several pages, in byte order.
  for (let i = 24; i >= 0; i--) {
    await env.KV.put(`page/${String(i).padStart(2, "0")}`, "p");
  }
  const names = [];
  let cursor;
  let pages = 0;
  for (;;) {
    const page = await env.KV.list({ prefix: "page/", limit: 10, cursor });
    pages++;
    names.push(...page.keys.map((k) => k.name));
    if (page.list_complete || pages > 10) {
      r.list_last_complete = page.list_complete;
      r.list_last_cursor = page.cursor ?? null;
      break;
    }
    cursor = page.cursor;
  }
  r.list_pages = pages;
  r.list_names = names;
  r.list_all = (await env.KV.list()).keys;
  r.list_plus = (await env.KV.list({ prefix: "a+" })).keys.map((k) => k.name);
  r.list_unicode = (await env.KV.list({ prefix: "ünï" })).keys.map((k) => k.name);
  r.list_cache_status = (await env.KV.list({ prefix: "zzz" })).cacheStatus;

  // Bulk gets: text, json, with metadata, and the refusals.
  r.bulk_text = await outcome(async () =>
    Object.fromEntries(await env.KV.get(["text", "missing", "a+b", "text"])),
  );
  r.bulk_json = await outcome(async () =>
    Object.fromEntries(await env.KV.get(["json"], { type: "json", cacheTtl: 90 })),
  );
  r.bulk_meta = await outcome(async () =>
    Object.fromEntries(await env.KV.getWithMetadata(["meta", "meta-str", "missing"])),
  );
  r.bulk_not_json = await outcome(async () =>
    Object.fromEntries(await env.KV.get(["text"], "json")),
  );
  r.bulk_101 = await outcome(async () =>
    Object.fromEntries(await env.KV.get(Array.from({ length: 101 }, (_, i) => "k" + i))),
  );
  r.bulk_array_buffer = await outcome(async () =>
    Object.fromEntries(await env.KV.get(["text"], "arrayBuffer")),
  );
  r.bulk_empty = await outcome(async () => Object.fromEntries(await env.KV.get([])));
  r.bulk_bad_key = await outcome(async () => Object.fromEntries(await env.KV.get(["text", "."])));
  r.bulk_stream = await outcome(async () =>
    Object.fromEntries(await env.KV.get(["text"], "stream")),
  );

  // Deletes: present, then null; missing is no error.
  r.delete = await outcome(() => env.KV.delete("text").then(() => "done"));
  r.get_deleted = await outcome(() => env.KV.get("text"));
  r.delete_missing = await outcome(() => env.KV.delete("never-was").then(() => "done"));
  for (const k of awkward) await env.KV.delete(k);
  r.awkward_deleted = await Promise.all(awkward.map((k) => env.KV.get(k)));
  r.list_plus_deleted = (await env.KV.list({ prefix: "a+" })).keys.map((k) => k.name);

  // What workerd leaves to the server to refuse.
  r.refuse_ttl = await outcome(() => env.KV.put("x", "v", { expirationTtl: 10 }));
  r.refuse_past = await outcome(() => env.KV.put("x", "v", { expiration: 1000 }));
  r.refuse_metadata = await outcome(() =>
    env.KV.put("x", "v", { metadata: { big: "x".repeat(1100) } }),
  );
  r.refuse_value = await outcome(() => env.KV.put("x", new Uint8Array(25 * 1024 * 1024 + 1)));
  r.refuse_limit = await outcome(() => env.KV.list({ limit: 1001 }));
  r.refuse_cache_ttl = await outcome(() => env.KV.get("json", { cacheTtl: 10 }));
  r.refuse_cursor = await outcome(() => env.KV.list({ cursor: "not-a-cursor" }));
  r.refuse_prefix = await outcome(() => env.KV.list({ prefix: "p".repeat(600) }));
  r.value_25mib = await outcome(async () => {
    await env.KV.put("big", new Uint8Array(25 * 1024 * 1024));
    return (await env.KV.get("big", "arrayBuffer")).byteLength;
  });
  // Bindings whose service sends a wrong token, or no namespace.
  r.bad_token = await outcome(() => env.BAD_TOKEN.get("json"));
  r.bad_token_put = await outcome(() => env.BAD_TOKEN.put("json", "x"));
  r.no_namespace = await outcome(() => env.NO_NAMESPACE.get("json"));
  r.unknown_namespace = await outcome(() => env.UNKNOWN_NAMESPACE.get("json"));
  return r;
}

async function mixed(env, round) {
  const failures = [];
  let calls = 0;
  const call = async (what, f) => {
    calls++;
    try {
      await f();
    } catch (e) {
      failures.push(`${what}: ${e && e.message ? e.message : e}`);
    }
  };
  for (let i = 0; i < 5; i++) {
    const n = (round * 5 + i) % 200;
    const key = `held-${String(n).padStart(4, "0")}`;
    await call(`get ${key}`, async () => {
      const value = await env.KV.get(key);
      if (value !== `value-${n}`) throw new Error(`got ${value}`);
    });
  }
  for (let i = 0; i < 3; i++) {
    const n = (round * 3 + i) % 300;
    const key = `cold-${String(n).padStart(4, "0")}`;
    await call(`get ${key}`, async () => {
      const { value } = await env.KV.getWithMetadata(key);
      if (value !== `cold value ${n}`) throw new Error(`got ${value}`);
    });
  }
  await call(`put w-${round}`, () => env.KV.put(`w-${round}`, `written ${round}`));
  await call(`get w-${round}`, async () => {
    const value = await env.KV.get(`w-${round}`);
    if (value !== `written ${round}`) throw new Error(`got ${value}`);
  });
  await call("list", async () => {
    const page = await env.KV.list({ prefix: "held-00", limit: 10 });
    if (page.keys.length !== 10) throw new Error(`listed ${page.keys.length}`);
  });
  await call("bulk", async () => {
    const got = await env.KV.get(["held-0001", "held-0002"]);
    if (got.get("held-0001") !== "value-1") throw new Error(`got ${got.get("held-0001")}`);
  });
  return { calls, failures };
}

export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    if (url.pathname === "/every-call") return Response.json(await everyCall(env));
    if (url.pathname === "/mixed") {
      return Response.json(await mixed(env, Number(url.searchParams.get("round") ?? "0")));
    }
    return new Response("not found", { status: 404 });
  },
};
