/**
 * The README's live React list in Debian's Chromium (playwright-core), with
 * the browser's own WebSocket: what a person sees after a write, a dismiss,
 * and a server crash and restart. Screenshots go to clients/ts/test-artifacts/.
 *
 * scripts/test runs this file only where Chromium is installed
 * (PROTOSYNC_CHROMIUM, default /usr/bin/chromium); under CI=true it must be.
 */

import assert from "node:assert/strict";
import { createServer, type Server } from "node:http";
import { mkdirSync } from "node:fs";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { after, before, test } from "node:test";

import { build } from "esbuild";
import { chromium, type Browser, type Page } from "playwright-core";

import { mutate } from "protosync/server";

import { api } from "./generated/api.js";
import { REPO, TestServer } from "./support/server.js";

const PACKAGE = join(REPO, "clients/ts");
const ARTIFACTS = join(PACKAGE, "test-artifacts");
const CHROMIUM = process.env.PROTOSYNC_CHROMIUM ?? "/usr/bin/chromium";
/** How long the page may take to show each expected state, in ms. */
const SHOW_MS = 15_000;

let server: TestServer;
let page: Server;
let browser: Browser;

before(async () => {
  server = await TestServer.start();
  const bundle = await build({
    entryPoints: [join(PACKAGE, "test/browser/app.tsx")],
    bundle: true,
    format: "esm",
    platform: "browser",
    target: "es2022",
    jsx: "automatic",
    write: false,
    define: { "process.env.NODE_ENV": '"production"' },
    // The package as an app would import it: its built entry points.
    alias: { protosync: join(PACKAGE, "dist") },
    logLevel: "silent",
  });
  const script = bundle.outputFiles[0]?.text ?? "";
  page = createServer((request, response) => {
    if (request.url?.startsWith("/app.js")) {
      response.writeHead(200, { "content-type": "text/javascript" }).end(script);
    } else {
      response
        .writeHead(200, { "content-type": "text/html" })
        .end('<!doctype html><html><body><div id="root"></div><script type="module" src="/app.js"></script></body></html>');
    }
  });
  await new Promise<void>((resolve) => page.listen(0, "127.0.0.1", resolve));
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
  });
  mkdirSync(ARTIFACTS, { recursive: true });
});

after(async () => {
  await browser?.close();
  page?.close();
  await server?.stop();
});

async function shows(tab: Page, text: string): Promise<void> {
  await tab.waitForFunction((t) => document.body.innerText.includes(t), text, { timeout: SHOW_MS });
}

test("a person sees the live list update, dismiss an item, and come back after the server restarts", async () => {
  const tab = await browser.newPage();
  const { port } = page.address() as AddressInfo;
  await tab.goto(`http://127.0.0.1:${port}/?server=${encodeURIComponent(server.url)}`);
  await shows(tab, "Important (open)");
  assert.equal(await tab.locator("li").count(), 0);

  await mutate(
    [
      api.workItems.upsert("w1", { ownerId: "ann", title: "Reply to Bob", important: true, priority: 2 }),
      api.workItems.upsert("w2", { ownerId: "ann", title: "Book flights", important: true, priority: 5 }),
    ],
    { url: server.url },
  );
  await shows(tab, "Book flights (priority 5)");
  assert.deepEqual(await tab.locator("li").allInnerTexts(), ["Book flights (priority 5) Dismiss", "Reply to Bob (priority 2) Dismiss"]);
  await tab.screenshot({ path: join(ARTIFACTS, "browser-1-live-list.png") });

  await tab.locator("li", { hasText: "Book flights" }).getByRole("button", { name: "Dismiss" }).click();
  await tab.waitForFunction(() => document.querySelectorAll("li").length === 1, null, { timeout: SHOW_MS });
  assert.deepEqual(await tab.locator("li").allInnerTexts(), ["Reply to Bob (priority 2) Dismiss"]);

  await server.kill();
  await shows(tab, "connecting");
  await tab.screenshot({ path: join(ARTIFACTS, "browser-2-server-down.png") });
  await server.restart();
  await mutate(api.workItems.upsert("w3", { ownerId: "ann", title: "Written while away", important: true, priority: 9 }), { url: server.url });
  await shows(tab, "Written while away (priority 9)");
  await shows(tab, "Important (open)");
  assert.deepEqual(await tab.locator("li").allInnerTexts(), ["Written while away (priority 9) Dismiss", "Reply to Bob (priority 2) Dismiss"]);
  await tab.screenshot({ path: join(ARTIFACTS, "browser-3-after-restart.png") });
  await tab.close();
});
