//! A ready workerd config and sample Worker for `edgekv dev --binding`: a
//! Worker whose `env.KV` binding reads and writes the dev edge.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// Where the sample Worker listens when workerd serves the config.
pub const WORKER_ADDR: &str = "127.0.0.1:8790";

/// The files written.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The workerd config (`npx workerd serve <config>`).
    pub config: PathBuf,
    /// The Worker's script.
    pub script: PathBuf,
    /// Where the Worker answers once served.
    pub worker_addr: &'static str,
}

/// The sample Worker: `GET /` counts visits in KV and lists the keys, `GET
/// /KEY` reads a key, `PUT /KEY` writes the body, `DELETE /KEY` deletes.
const WORKER_JS: &str = r#"// A Worker reading and writing edgekv through workerd's KV binding (env.KV).
// Written by `edgekv dev --binding`; edit it freely, it is not rewritten.
export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    const key = decodeURIComponent(url.pathname.slice(1));
    if (key === "") {
      const visits = Number((await env.KV.get("visits")) ?? "0") + 1;
      await env.KV.put("visits", String(visits));
      const { keys } = await env.KV.list();
      const names = keys.map((k) => k.name).join(", ");
      return new Response(`Hello from a Worker on edgekv: visit ${visits}\nkeys: ${names}\n`);
    }
    switch (request.method) {
      case "PUT":
        await env.KV.put(key, await request.text());
        return new Response(`stored ${key}\n`);
      case "DELETE":
        await env.KV.delete(key);
        return new Response(`deleted ${key}\n`);
      default: {
        const { value, metadata, cacheStatus } = await env.KV.getWithMetadata(key);
        if (value === null) return new Response(`no key ${key}\n`, { status: 404 });
        return new Response(value, {
          headers: { "x-kv-metadata": JSON.stringify(metadata), "x-kv-cache": String(cacheStatus) },
        });
      }
    }
  },
};
"#;

/// The workerd config: the Worker, and the edge's binding listener as the
/// external service its `KV` binding names, with the token and namespace the
/// edge needs added to every request.
fn config(binding: SocketAddr, token: &str, namespace: &str) -> String {
    format!(
        r#"# A Worker on workerd whose KV binding reads and writes edgekv (written by
# `edgekv dev --binding`, rewritten at each start). Run:
#   npx workerd serve {{this file}}
# and the Worker answers on http://{WORKER_ADDR}/.
using Workerd = import "/workerd/workerd.capnp";

const config :Workerd.Config = (
  services = [
    (name = "main", worker = .worker),
    # The edge's binding listener. workerd sends no credentials and no
    # namespace of its own: the edge reads them from these headers.
    (name = "edgekv", external = (
      address = "{binding}",
      http = (injectRequestHeaders = [
        (name = "Authorization", value = "Bearer {token}"),
        (name = "edgekv-namespace", value = "{namespace}"),
      ]),
    )),
  ],
  sockets = [(name = "http", address = "{WORKER_ADDR}", http = (), service = "main")],
);

const worker :Workerd.Worker = (
  modules = [(name = "worker.js", esModule = embed "worker.js")],
  compatibilityDate = "2025-09-01",
  bindings = [(name = "KV", kvNamespace = "edgekv")],
);
"#
    )
}

/// Writes the config (always: the edge's address or token may have changed)
/// and the sample Worker (only when absent: it is the user's to edit) into
/// `dir`. The config holds a token, so it is readable by its owner only.
pub fn write_sample(
    dir: &Path,
    binding: SocketAddr,
    token: &str,
    namespace: &str,
) -> anyhow::Result<Sample> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let config_path = dir.join("config.capnp");
    crate::dev::write_private(&config_path, &config(binding, token, namespace))
        .with_context(|| format!("cannot write {}", config_path.display()))?;
    let script = dir.join("worker.js");
    if !script.exists() {
        std::fs::write(&script, WORKER_JS)
            .with_context(|| format!("cannot write {}", script.display()))?;
    }
    Ok(Sample {
        config: config_path,
        script,
        worker_addr: WORKER_ADDR,
    })
}
