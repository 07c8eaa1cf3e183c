// Better Auth in the browser: the session lives in a cookie on this origin
// (Vite proxies /api/auth to the auth server); protosync gets a JWT from
// /api/auth/token, never the cookie.
import { jwtClient } from "better-auth/client/plugins";
import { createAuthClient } from "better-auth/react";
import type { FetchToken } from "protosync";

export const authClient = createAuthClient({ baseURL: window.location.origin, plugins: [jwtClient()] });

/**
 * What the protosync client calls for a token: now, and again before each
 * one expires (Better Auth's last 15 minutes; the SDK refreshes a minute
 * early). `null` means signed out.
 */
export const fetchToken: FetchToken = async () => {
  const { data, error } = await authClient.token();
  if (error !== null) return null;
  return data.token;
};
