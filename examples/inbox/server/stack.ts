/**
 * The whole app in one call: the fake Gmail, the Better Auth server,
 * protosync, the backend and the web app (Vite), wired to each other, with
 * the demo user and mailbox seeded. `npm run dev` and the browser test both
 * start it; ports are fixed for the demo and free ones for tests.
 */
import { createServer as createNetServer, type AddressInfo } from "node:net";
import { randomBytes } from "node:crypto";
import { mkdirSync } from "node:fs";
import { join } from "node:path";

import react from "@vitejs/plugin-react";
import { ProtosyncHttpClient } from "protosync/server";
import { createServer as createVite, type ViteDevServer } from "vite";

import { api } from "../web/src/protosync/api.js";
import { ACTIONS_PATH } from "./actions.js";
import { startAuthServer, type AuthServer } from "./auth.js";
import { startBackend, type Backend } from "./backend.js";
import { startFakeGmail, type FakeGmail, type NewMessage } from "./fake-gmail.js";
import { EXAMPLE_DIR, ProtosyncProcess } from "./protosync.js";

/** The demo user `npm run dev` signs in with. */
export const DEMO_USER = { email: "demo@inbox.test", password: "demo-password", name: "Dana Demo" } as const;

export interface StackPorts {
  readonly web: number;
  readonly protosync: number;
  readonly auth: number;
  readonly gmail: number;
  readonly backend: number;
}

export interface StackOptions {
  /** Absent: free ports. */
  readonly ports?: StackPorts;
  /** Where the databases go (created if missing). */
  readonly dataDir: string;
  /** Messages in the demo user's mailbox at start. */
  readonly seedMessages: readonly Omit<NewMessage, "to">[];
  readonly log?: (line: string) => void;
}

export interface Stack {
  readonly webUrl: string;
  readonly protosync: ProtosyncProcess;
  readonly auth: AuthServer;
  readonly gmail: FakeGmail;
  readonly backend: Backend;
  /** The HTTP API as the backend sees it (its API key: every document). */
  readonly service: ProtosyncHttpClient;
  /** The secret protosync signs action calls to the backend with. */
  readonly backendSecret: string;
  stop(): Promise<void>;
}

export async function startStack(options: StackOptions): Promise<Stack> {
  const log = options.log ?? (() => {});
  mkdirSync(options.dataDir, { recursive: true });
  const webPort = options.ports?.web ?? (await freePort());
  // protosync's config names the backend's URL, so its port is chosen first.
  const backendPort = options.ports?.backend ?? (await freePort());
  const webOrigin = `http://127.0.0.1:${webPort}`;
  const backendApiKey = `inbox_backend_${randomBytes(24).toString("hex")}`;
  const backendSecret = randomBytes(32).toString("hex");

  const gmail = await startFakeGmail(options.ports?.gmail ?? 0);
  let service: ProtosyncHttpClient | undefined;
  const auth = await startAuthServer({
    port: options.ports?.auth ?? 0,
    dbPath: join(options.dataDir, "auth.db"),
    webOrigin,
    secret: randomBytes(32).toString("base64url"),
    // Each new user gets a mailbox for the ingestion to read.
    onUserCreated: async (user) => {
      if (service === undefined) throw new Error("protosync is not running yet");
      await service.mutate(api.mailboxes.insert(user.id, { ownerId: user.id, email: user.email, historyId: "0" }), { idempotencyKey: `mailbox-${user.id}` });
    },
  });
  const protosync = new ProtosyncProcess({
    port: options.ports?.protosync ?? 0,
    dataDir: options.dataDir,
    authUrl: auth.url,
    jwksUrl: auth.jwksUrl,
    backendApiKey,
    backendUrl: `http://127.0.0.1:${backendPort}${ACTIONS_PATH}`,
    backendSecret,
  });
  await protosync.start();
  service = new ProtosyncHttpClient({ url: protosync.url, token: backendApiKey });

  await auth.seedUser(DEMO_USER);
  for (const message of options.seedMessages) gmail.deliver({ ...message, to: DEMO_USER.email });
  const backend = await startBackend({
    port: backendPort,
    secret: backendSecret,
    protosyncUrl: protosync.url,
    apiKey: backendApiKey,
    gmailUrl: gmail.url,
    log,
  });
  await backend.ingestNow();

  const web = await startWeb(webPort, protosync.url, auth.url);
  return {
    webUrl: webOrigin,
    protosync,
    auth,
    gmail,
    backend,
    service,
    backendSecret,
    async stop() {
      await backend.close();
      await web.close();
      await protosync.kill();
      await auth.close();
      await gmail.close();
    },
  };
}

/** Vite serving web/, with Better Auth behind its `/api/auth` proxy (one origin for the session cookie). */
async function startWeb(port: number, protosyncUrl: string, authUrl: string): Promise<ViteDevServer> {
  const vite = await createVite({
    configFile: false,
    root: join(EXAMPLE_DIR, "web"),
    plugins: [react()],
    logLevel: "warn",
    clearScreen: false,
    define: { __PROTOSYNC_URL__: JSON.stringify(protosyncUrl) },
    server: { host: "127.0.0.1", port, strictPort: true, proxy: { "/api/auth": { target: authUrl } } },
  });
  await vite.listen();
  return vite;
}

/** A port that was free a moment ago (for servers whose URL is needed before they start). */
async function freePort(): Promise<number> {
  const server = createNetServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}
