/**
 * The auth server: Better Auth with email + password, its users in SQLite
 * (better-sqlite3), and its `jwt()` plugin, which mints the short-lived EdDSA
 * tokens protosync verifies with the JWKS served at `<baseURL>/api/auth/jwks`.
 * It replaces Convex's Better Auth component: protosync never sees a
 * password or a session, only the JWT.
 */
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";

import Database from "better-sqlite3";
import { betterAuth } from "better-auth";
import { getMigrations } from "better-auth/db/migration";
import { toNodeHandler } from "better-auth/node";
import { jwt } from "better-auth/plugins";

export interface AuthServerOptions {
  readonly port: number;
  /** The SQLite file of users, sessions and signing keys. */
  readonly dbPath: string;
  /** The web app's origin: sign-in requests come from there (through its proxy). */
  readonly webOrigin: string;
  /** Better Auth's secret (cookies, key encryption): at least 32 random characters. */
  readonly secret: string;
  /** Runs after each sign-up, with the new user's id and email. */
  readonly onUserCreated: (user: { id: string; email: string }) => Promise<void>;
}

export interface AuthServer {
  /** The base URL: also the tokens' `iss` and `aud`. */
  readonly url: string;
  readonly jwksUrl: string;
  /** Creates the user unless one has this email. */
  seedUser(user: { email: string; password: string; name: string }): Promise<void>;
  close(): Promise<void>;
}

export async function startAuthServer(options: AuthServerOptions): Promise<AuthServer> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(options.port, "127.0.0.1", resolve));
  const baseURL = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const auth = betterAuth({
    appName: "Inbox",
    baseURL,
    secret: options.secret,
    database: new Database(options.dbPath),
    emailAndPassword: { enabled: true, autoSignIn: true },
    trustedOrigins: [options.webOrigin],
    // The plugin's defaults are what protosync's [auth] provider expects:
    // EdDSA (Ed25519) keys, 15-minute tokens, `iss` and `aud` = baseURL.
    plugins: [jwt()],
    databaseHooks: { user: { create: { after: (user) => options.onUserCreated(user) } } },
  });
  await (await getMigrations(auth.options)).runMigrations();
  server.on("request", toNodeHandler(auth));
  return {
    url: baseURL,
    jwksUrl: `${baseURL}/api/auth/jwks`,
    async seedUser(user) {
      const ctx = await auth.$context;
      if ((await ctx.internalAdapter.findUserByEmail(user.email)) !== null) return;
      await auth.api.signUpEmail({ body: user });
    },
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}
