// The dashboard in a real browser (Debian's chromium through playwright-core),
// against a running local cluster that browser_test.c started:
//
//   node browser.js URL VICTIM_PID OUT_DIR
//
// Opens the page, waits until it shows a training world and n1's hot GPU as
// a warning, kills the victim
// trainer (SIGKILL), and waits until the fault appears in the page's fault log
// and then its recovery time, without a reload (a marker set on the window
// before the kill must still be there). Any request that leaves the
// coordinator fails the test: the page must fetch nothing from elsewhere.
// Screenshots go to OUT_DIR (dashboard-running.png, dashboard-fault.png, or
// dashboard-failure.png). Exit status 0 when all of it held; every wait has a
// deadline.
"use strict";
const fs = require("fs");
const os = require("os");
const path = require("path");
const { chromium } = require("playwright-core");

const [url, victimText, outDir] = process.argv.slice(2);
const victim = Number(victimText);
const WAIT_MS = 90000;

function log(...args) {
  console.log(new Date().toISOString(), ...args);
}

async function main() {
  if (!url || !victim || !outDir) throw new Error("usage: node browser.js URL VICTIM_PID OUT_DIR");
  const profile = fs.mkdtempSync(path.join(process.env.TEST_TMPDIR || os.tmpdir(), "chromium-profile-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: "/usr/bin/chromium",
    headless: true,
    viewport: { width: 1440, height: 1000 },
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    timeout: WAIT_MS,
  });
  const page = context.pages()[0] || (await context.newPage());
  const base = new URL(url).origin;
  const foreign = [];
  page.on("request", (r) => {
    if (!r.url().startsWith(base) && !r.url().startsWith("data:")) foreign.push(r.url());
  });
  page.on("console", (m) => { if (m.type() === "error") log("page console:", m.text()); });
  let navigations = 0;
  page.on("framenavigated", (f) => { if (f === page.mainFrame()) navigations++; });
  try {
    await page.goto(url, { timeout: WAIT_MS });
    log("page opened");
    // Live, leading, and training: a world, steps moving, nodes in the grid.
    await page.waitForFunction(() => {
      const step = Number((document.getElementById("k-step").textContent || "").replace(/,/g, ""));
      return document.getElementById("conn").className === "live" &&
        document.getElementById("role").textContent === "leader" &&
        document.querySelectorAll('.node[data-state="ACTIVE"]').length >= 2 && step > 0;
    }, null, { timeout: WAIT_MS, polling: 200 });
    // n1's hot GPU (browser_test.c writes its temperature) shows as a warning.
    await page.waitForSelector('.node[data-node="n1"] .chip.s-WARNING', { timeout: WAIT_MS });
    log("training shown; killing trainer pid", victim);
    await page.screenshot({ path: path.join(outDir, "dashboard-running.png"), fullPage: true });
    const before = await page.evaluate(() => {
      window.__tardigradeNoReload = "still here";
      return Array.from(document.querySelectorAll("tr.fault")).map((tr) => tr.dataset.faultId);
    });
    const navigationsBefore = navigations;
    process.kill(victim, "SIGKILL");

    // The fault appears, pushed over the event stream.
    const row = await page.waitForFunction((seen) => {
      for (const tr of document.querySelectorAll('tr.fault[data-kind="TRAINER_EXIT"]'))
        if (!seen.includes(tr.dataset.faultId)) return tr.dataset.faultId;
      return false;
    }, before, { timeout: WAIT_MS, polling: 100 });
    const faultId = await row.jsonValue();
    log("fault", faultId, "shown");
    // Then training resumes in a new world: the row gets its recovery time.
    await page.waitForFunction((id) => {
      const tr = document.querySelector('tr.fault[data-fault-id="' + id + '"]');
      return tr && / (ms|s|min)$/.test(tr.children[5].textContent);
    }, faultId, { timeout: WAIT_MS, polling: 100 });
    const shown = await page.evaluate((id) => {
      const tr = document.querySelector('tr.fault[data-fault-id="' + id + '"]');
      return { marker: window.__tardigradeNoReload, cells: Array.from(tr.children).map((td) => td.textContent) };
    }, faultId);
    log("fault row:", JSON.stringify(shown.cells));
    if (shown.marker !== "still here" || navigations !== navigationsBefore)
      throw new Error("the page was reloaded");
    if (!/ rank \d+$/.test(shown.cells[2])) throw new Error("no culprit rank in " + shown.cells[2]);
    if (foreign.length) throw new Error("the page fetched from elsewhere: " + foreign.join(", "));
    await new Promise((r) => setTimeout(r, 1500)); // let the charts take a few more points
    await page.screenshot({ path: path.join(outDir, "dashboard-fault.png"), fullPage: true });
    log("ok");
  } catch (e) {
    await page.screenshot({ path: path.join(outDir, "dashboard-failure.png"), fullPage: true }).catch(() => {});
    throw e;
  } finally {
    await context.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
}

main().then(() => process.exit(0), (e) => {
  log("FAILED:", e && e.message ? e.message : e);
  process.exit(1);
});
