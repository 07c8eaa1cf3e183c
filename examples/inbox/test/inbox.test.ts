/**
 * The inbox app end to end in Debian's Chromium (playwright-core): the whole
 * stack (fake Gmail, Better Auth, protosync, the backend, the Vite app) on
 * free ports, and people using it in separate browser contexts. Every check
 * is on what the page shows; waits are on page content, never on sleeps.
 * Screenshots go to examples/inbox/test-artifacts/ (not committed).
 */
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";

import { chromium, type Browser, type BrowserContext, type Page } from "playwright-core";

import { callAction } from "protosync/server";

import { api } from "../web/src/protosync/api.js";
import { DEMO_MESSAGES } from "../server/demo-messages.js";
import { EXAMPLE_DIR } from "../server/protosync.js";
import { DEMO_USER, startStack, type Stack } from "../server/stack.js";

const CHROMIUM = process.env.PROTOSYNC_CHROMIUM ?? "/usr/bin/chromium";
const ARTIFACTS = join(EXAMPLE_DIR, "test-artifacts");
/** How long the page may take to show each expected state, in ms (slow CI machines). */
const SHOW_MS = 30_000;
/** The feed's first page (web/src/queries.ts FEED_PAGE_SIZE). */
const PAGE_SIZE = 8;
/** The seeded messages the agent marks important (all but the newsletter). */
const IMPORTANT_SEEDED = DEMO_MESSAGES.length - 1;

let stack: Stack;
let browser: Browser;
let dataDir: string;
let alice: Page; // the demo user in one browser…
let again: Page; // …and in another
const contexts: BrowserContext[] = [];

before(async () => {
  dataDir = mkdtempSync(join(tmpdir(), "inbox-test-"));
  mkdirSync(ARTIFACTS, { recursive: true });
  stack = await startStack({ dataDir, seedMessages: DEMO_MESSAGES });
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
  });
  alice = await signIn(DEMO_USER);
  again = await signIn(DEMO_USER);
});

after(async () => {
  for (const context of contexts) await context.close();
  await browser?.close();
  await stack?.stop();
  rmSync(dataDir, { recursive: true, force: true });
});

/** A new browser context (its own cookies) signed in through the sign-in form. */
async function signIn(user: { email: string; password: string; name: string }, signUp = false): Promise<Page> {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  contexts.push(context);
  const page = await context.newPage();
  await page.goto(stack.webUrl);
  if (signUp) {
    await page.getByRole("button", { name: "New here? Create an account" }).click();
    await page.getByLabel("Name").fill(user.name);
  }
  await page.getByLabel("Email").fill(user.email);
  await page.getByLabel("Password").fill(user.password);
  await page.locator("button[type=submit]").click();
  await shows(page, user.name);
  await shows(page, "Live");
  return page;
}

async function shows(page: Page, text: string): Promise<void> {
  await page.waitForFunction((t) => document.body.innerText.includes(t), text, { timeout: SHOW_MS });
}

async function until(page: Page, what: string, check: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + SHOW_MS;
  while (!(await check())) {
    if (Date.now() > deadline) assert.fail(`${what}: not shown within ${SHOW_MS} ms; the page says:\n${await page.innerText("body")}`);
    await page.waitForTimeout(50);
  }
}

/** The feed's cards, top to bottom, as text. */
const feed = (page: Page) => page.getByTestId("feed-item").allInnerTexts();
const card = (page: Page, subject: string) => page.getByTestId("feed-item").filter({ hasText: subject });
const subjects = async (page: Page) => (await feed(page)).map((text) => text.split("\n")[2] ?? "");
const priorities = async (page: Page) => (await feed(page)).map((text) => Number(/\nP(\d+)\n/.exec(`\n${text}\n`)?.[1]));

/** A button of the open item's proposal. */
const proposalButton = (page: Page, name: string) => page.getByTestId("proposal").getByRole("button", { name, exact: true });

async function open(page: Page, subject: string): Promise<void> {
  await card(page, subject).click();
  await page.getByTestId("detail").filter({ hasText: subject }).waitFor({ timeout: SHOW_MS });
}

test("the Important feed is ordered by priority and pages with Show more", async () => {
  await until(alice, "the first page", async () => (await feed(alice)).length === PAGE_SIZE);
  const first = await priorities(alice);
  assert.deepEqual(first, [...first].sort((a, b) => b - a), `priorities ${first}`);
  assert.equal((await subjects(alice))[0], "Urgent: production outage on checkout");
  assert.equal(await alice.getByTestId("feed-count").innerText(), `${PAGE_SIZE}+ items`);
  await alice.getByRole("button", { name: "Show more" }).click();
  await until(alice, "the second page", async () => (await feed(alice)).length === IMPORTANT_SEEDED);
  const all = await priorities(alice);
  assert.deepEqual(all, [...all].sort((a, b) => b - a), `priorities ${all}`);
  assert.ok(!(await subjects(alice)).includes("Your weekly newsletter"), "the newsletter is not important");
  await alice.getByRole("button", { name: "Show more" }).waitFor({ state: "detached", timeout: SHOW_MS });
  await open(alice, "Urgent: production outage on checkout");
  await shows(alice, "Thanks for your note about");
  await alice.screenshot({ path: join(ARTIFACTS, "1-feed.png") });
});

test("an approve in one browser shows in the other without a reload", async () => {
  await open(alice, "Design review meeting on Thursday");
  await open(again, "Design review meeting on Thursday");
  await proposalButton(alice, "Approve").click();
  await until(alice, "Approved on the card", async () => (await card(alice, "Design review meeting").innerText()).includes("Approved"));
  await until(again, "Approved in the other browser", async () => (await card(again, "Design review meeting").innerText()).includes("Approved"));
  assert.equal(await again.getByTestId("proposal-status").innerText(), "Approved");
  // Approving leaves the item in the feed and offers no second approve.
  assert.equal(await proposalButton(again, "Approve").count(), 0);
});

test("the command conversation: the preview, respond changes it, confirm sends once and shows in both browsers", async () => {
  const subject = "Contract renewal for 2027";
  await open(alice, subject);
  await open(again, subject);
  await shows(alice, `Thanks for your note about "${subject}"`);
  assert.equal(await alice.getByTestId("proposal-status").innerText(), "Awaiting your review");

  await alice.getByLabel("Follow-up").fill("Say we will sign by Thursday");
  await alice.getByRole("button", { name: "Update draft", exact: true }).click();
  for (const page of [alice, again]) {
    await until(page, "the revised draft", async () => (await page.getByTestId("proposal-status").innerText()) === "Revised");
    await until(page, "the follow-up and the new draft", async () => {
      const turns = await page.getByTestId("conversation").locator("li").allInnerTexts();
      return turns.length === 3 && turns[1]!.includes("Say we will sign by Thursday") && turns[2]!.includes("Say we will sign by Thursday.");
    });
  }
  await alice.screenshot({ path: join(ARTIFACTS, "2-conversation.png") });

  await alice.getByRole("button", { name: "Confirm & send", exact: true }).click();
  for (const page of [alice, again]) {
    await until(page, "Confirmed", async () => (await page.getByTestId("proposal-status").innerText()) === "Confirmed");
    await shows(page, "Sent to marcus@contoso.test.");
  }
  const sent = () => stack.gmail.sends.filter((s) => s.subject === `Re: ${subject}`);
  assert.equal(sent().length, 1);
  assert.match(sent()[0]!.body, /Say we will sign by Thursday\./);

  // Retried: by the same user with the page's idempotency key (answered from
  // protosync's record), and by a service with a new key (the backend sees it
  // is confirmed). Still one send.
  const actionId = (await stack.service.fetchQuery(api.proposedActions.all().limit(100))).find((a) => a.doc.replySubject === `Re: ${subject}`)!.id;
  const token = await alice.evaluate(async () => ((await (await fetch("/api/auth/token")).json()) as { token: string }).token);
  const byUser = await callAction(api.inbox.confirm, { actionId }, { url: stack.protosync.url, token, idempotencyKey: `confirm:${actionId}` });
  assert.equal(byUser.duplicate, true);
  const byService = await stack.service.callAction(api.inbox.confirm, { actionId });
  assert.equal(byService.result.sentMessageId, sent()[0]!.id);
  assert.equal(byUser.result.sentMessageId, sent()[0]!.id);
  assert.equal(sent().length, 1, "one email, however often confirm is called");
  await alice.screenshot({ path: join(ARTIFACTS, "2-confirmed.png") });
});

test("feedback and dismiss reach both browsers; a dismissed item leaves the feed", async () => {
  await open(alice, "Invoice #4821 is overdue");
  await open(again, "Invoice #4821 is overdue");
  await proposalButton(alice, "Not helpful").click();
  await shows(alice, "Thanks — you rated this not helpful.");
  await shows(again, "Thanks — you rated this not helpful.");
  await proposalButton(alice, "Dismiss").click();
  for (const page of [alice, again]) {
    await until(page, "the dismissed item gone", async () => !(await subjects(page)).includes("Invoice #4821 is overdue"));
  }
  // The other browser still has it open: the proposal says what happened.
  await until(again, "Dismissed in the other browser", async () => (await again.getByTestId("proposal-status").innerText()) === "Dismissed");
});

test("a message put into Gmail appears in both feeds after the next scheduled ingestion", async () => {
  stack.gmail.deliver({ to: DEMO_USER.email, from: { name: "Rita Gomez", email: "rita@initech.test" }, subject: "Urgent: sign the NDA today", body: "Legal needs the NDA signed today." });
  for (const page of [alice, again]) {
    await until(page, "the new message at the top", async () => (await subjects(page)).slice(0, 2).includes("Urgent: sign the NDA today"));
  }
});

test("a second user sees none of the first user's items, live or after a reload", async () => {
  const sam = await signIn({ email: "sam@inbox.test", password: "sam-password", name: "Sam Second" }, true);
  await shows(sam, "You're all caught up.");
  stack.gmail.deliver({ to: DEMO_USER.email, from: { name: "Ivy Park", email: "ivy@globex.test" }, subject: "Urgent: only for Dana", body: "Private to Dana." });
  stack.gmail.deliver({ to: "sam@inbox.test", from: { name: "Leo Marsh", email: "leo@globex.test" }, subject: "Contract for Sam", body: "Sam's own contract." });
  await until(sam, "Sam's own message", async () => (await subjects(sam)).includes("Contract for Sam"));
  await until(alice, "Dana's new message", async () => (await subjects(alice)).includes("Urgent: only for Dana"));
  assert.deepEqual(await subjects(sam), ["Contract for Sam"]);
  await sam.screenshot({ path: join(ARTIFACTS, "3-second-user.png") });
  // After a reload, and asking for one of Dana's items by its address.
  await sam.goto(`${stack.webUrl}/#item=${encodeURIComponent("gmail-msg-1")}`);
  await shows(sam, "This item is no longer in your inbox.");
  await until(sam, "Sam's feed after the reload", async () => (await feed(sam)).length === 1);
  assert.deepEqual(await subjects(sam), ["Contract for Sam"]);
});

test("protosync killed and restarted: both browsers show reconnecting, catch up without a reload, and an approve made meanwhile is applied once", async () => {
  await open(alice, "Quick call about the Q3 roadmap");
  await open(again, "Quick call about the Q3 roadmap");
  const itemId = (await stack.service.fetchQuery(api.workItems.byOwnerFeed({ ownerId: await ownerOf(DEMO_USER.email) }).limit(100))).find(
    (d) => d.doc.subject === "Quick call about the Q3 roadmap",
  )!.id;
  const before = await stack.service.fetchQuery(api.workItems.get(itemId));

  await stack.protosync.kill();
  await shows(alice, "Reconnecting…");
  await shows(again, "Reconnecting…");
  await proposalButton(alice, "Approve").click();
  // Shown at once (optimistic), while the server is down.
  await until(alice, "Approved while offline", async () => (await card(alice, "Quick call about the Q3").innerText()).includes("Approved"));
  stack.gmail.deliver({ to: DEMO_USER.email, from: { name: "Wes Hart", email: "wes@umbrella.test" }, subject: "Urgent: written while protosync was down", body: "Hello." });
  await alice.screenshot({ path: join(ARTIFACTS, "4-reconnecting.png") });

  await stack.protosync.restart();
  for (const page of [alice, again]) {
    await shows(page, "Live");
    await until(page, "the approve in both", async () => (await card(page, "Quick call about the Q3").innerText()).includes("Approved"));
    await until(page, "the message ingested meanwhile", async () => (await subjects(page)).includes("Urgent: written while protosync was down"));
  }
  const afterRestart = await stack.service.fetchQuery(api.workItems.get(itemId));
  assert.equal(afterRestart?.doc.state, "STATE_APPROVED");
  assert.equal(Number(afterRestart?.version), Number(before?.version) + 1, "the approve was written exactly once");
});

/** The Better Auth user id of `email`, from the mailbox the auth server filed. */
async function ownerOf(email: string): Promise<string> {
  const mailboxes = await stack.service.fetchQuery(api.mailboxes.all().limit(100));
  return mailboxes.find((m) => m.doc.email === email)!.doc.ownerId;
}
