// Drives control's rollout dashboard in headless chromium (playwright-core),
// for tests/dashboard.rs: a rollout started with the edgekv CLI advances on the
// page; the buttons refuse without the admin token; with it, pause, resume and
// a rollback with its reason work. Exits non-zero with what it expected.
//   node drive.cjs DASHBOARD_URL EDGEKV_BIN CONTROL_URL ADMIN_TOKEN SCREENSHOT_DIR
"use strict";
const path = require("path");
const { execFileSync } = require("child_process");

const [url, bin, control, admin, shots] = process.argv.slice(2);
const nodeDir = process.env.EDGEKV_NODE_DIR || path.join(process.env.HOME, ".cache/edgekv-node");
const { chromium } = require(path.join(nodeDir, "node_modules/playwright-core"));
const WAIT = { timeout: 30000 };

function cli(...args) {
  return execFileSync(bin, args, {
    env: { ...process.env, EDGEKV_CONTROL: control, EDGEKV_ADMIN_TOKEN: admin },
    encoding: "utf8",
  });
}

function check(ok, what) {
  if (!ok) throw new Error("expected: " + what);
  console.log("ok:", what);
}

(async () => {
  const browser = await chromium.launch({
    executablePath: process.env.EDGEKV_CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
  });
  try {
    const page = await browser.newPage({ viewport: { width: 1360, height: 1000 } });
    const pageErrors = [];
    page.on("pageerror", (e) => pageErrors.push(e.message));
    await page.goto(url);
    const env = page.locator('section.env[data-env="dev"]');
    await env.locator('tr[data-build="dev-2"]').waitFor(WAIT);
    check((await env.locator(".summary").textContent()).includes("known-good dev-1"), "known-good dev-1 in the summary");
    check((await env.locator('tr[data-build="dev-1"] td.mono').first().textContent()).match(/^[0-9a-f]{32}$/), "dev-1's data set shown");
    check(await env.locator(".active.none").count() === 1, "no deployment in progress at first");
    await env.locator(".edges tr[data-node]").first().waitFor(WAIT);
    check((await env.locator(".edges tr[data-node]").first().textContent()).includes("connected"), "the edge is shown connected");
    check(await page.locator("#token-state").textContent() === "read-only", "read-only without a token");

    // A rollout, started from the command line, advances on the page.
    cli("deploy", "start", "dev-2", "--environment", "dev", "--steps", "10:3s,50:3s,100:120s", "--min-requests", "0");
    await env.locator('.active .steps li.current[data-step="0"]').waitFor(WAIT);
    check((await env.locator(".active .steps li").nth(0).textContent()).includes("10%"), "step 1 at 10%");
    await env.locator('.active .steps li.current[data-step="1"]').waitFor(WAIT);
    check((await env.locator(".active .steps li").nth(1).textContent()).includes("50%"), "step 2 at 50%");
    check(await env.locator('.active .steps li.done[data-step="0"]').count() === 1, "step 1 done");
    await env.locator('.active .steps li.current[data-step="2"]').waitFor(WAIT);
    check(await env.locator(".active .steps li.current progress").count() === 1, "the current step's bake progress");
    const verdict = await env.locator(".active .verdict").textContent();
    check(/^(healthy|inconclusive|breach)/.test(verdict), "a health verdict: " + verdict);
    check((await env.locator(".active .figures").textContent()).includes("deploying"), "the figures judged");
    await page.screenshot({ path: path.join(shots, "dashboard.png"), fullPage: true });

    // The buttons refuse without the admin token, and nothing changes.
    await env.locator("button.pause").click();
    await env.locator(".message.refused").waitFor(WAIT);
    check((await env.locator(".message").textContent()).includes("refused (401)"), "pause refused without a token");
    await page.evaluate(() => { document.querySelector('section.env[data-env="dev"] .message').textContent = ""; });
    const refusedRollback = page.waitForResponse((r) => r.url().endsWith("/api/environments/dev/rollback"));
    await env.locator("button.rollback").click();
    check((await refusedRollback).status() === 401, "rollback answered 401 without a token");
    await page.waitForFunction(() => document.querySelector('section.env[data-env="dev"] .message').textContent.includes("refused (401)"), null, WAIT);
    check(true, "rollback refused without a token");
    check(await env.locator(".active .phase").textContent() === "running", "still running");
    // A wrong token is refused too.
    await page.fill("#token", "not-the-admin-token");
    await page.click("#use-token");
    await env.locator("button.pause").click();
    await page.waitForFunction(() => document.querySelector('section.env[data-env="dev"] .message').textContent.includes("not an admin token"), null, WAIT);
    check(true, "a wrong token refused");

    // With the admin token: pause, resume, roll back with a reason.
    await page.fill("#token", admin);
    await page.click("#use-token");
    check((await page.locator("#token-state").textContent()).includes("admin token set"), "the token is set");
    check(await page.evaluate(() => document.cookie === "" && localStorage.length === 0), "the token is in no cookie and no local storage");
    await env.locator("button.pause").click();
    await page.waitForFunction(() => document.querySelector('section.env[data-env="dev"] .active .phase')?.textContent === "paused", null, WAIT);
    check(true, "paused");
    await env.locator("button.resume").click();
    await page.waitForFunction(() => document.querySelector('section.env[data-env="dev"] .active .phase')?.textContent === "running", null, WAIT);
    check(true, "resumed");
    // The reason is shown as text, never run as markup.
    await env.locator("input.reason").fill('browser test: dev-2 looked wrong <img src=x onerror="window.__xss=1">');
    await env.locator("button.rollback").click();
    const rolledBack = env.locator('.history li[data-id="dev-2"]');
    await rolledBack.waitFor(WAIT);
    check((await rolledBack.locator(".phase").textContent()) === "rolled_back", "dev-2 rolled back in the history");
    check((await rolledBack.locator(".reason").textContent()).includes('browser test: dev-2 looked wrong <img src=x onerror="window.__xss=1">'), "the rollback's reason shown");
    check(await rolledBack.locator(".reason img").count() === 0 && await page.evaluate(() => window.__xss === undefined), "the reason shown as text, not markup");
    await env.locator(".active.none").waitFor(WAIT);
    check((await env.locator(".summary").textContent()).includes("known-good dev-1"), "known-good is dev-1 again");
    // And the CLI agrees with the page.
    const status = JSON.parse(cli("deploy", "status", "dev-2", "--json"))[0];
    check(status.phase === "rolled_back" && status.reason.includes("browser test"), "control says rolled back, with the reason");
    await page.screenshot({ path: path.join(shots, "dashboard-rolled-back.png"), fullPage: true });
    check(pageErrors.length === 0, "no script error on the page: " + pageErrors.join("; "));
  } finally {
    await browser.close();
  }
})().catch((e) => {
  console.error(e.stack || String(e));
  process.exit(1);
});
