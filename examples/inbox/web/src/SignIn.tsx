import { type FormEvent, useState } from "react";

import { authClient } from "./auth";

export function SignIn() {
  const [mode, setMode] = useState<"signIn" | "signUp">("signIn");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  async function submit(event: FormEvent<HTMLFormElement>) {
    event.preventDefault();
    const form = new FormData(event.currentTarget);
    const email = String(form.get("email"));
    const password = String(form.get("password"));
    setBusy(true);
    setError(null);
    const { error } =
      mode === "signIn"
        ? await authClient.signIn.email({ email, password })
        : await authClient.signUp.email({ email, password, name: String(form.get("name")) });
    setBusy(false);
    if (error !== null) setError(error.message ?? "Could not sign in");
  }

  return (
    <div className="signin">
      <form className="card signin-card" onSubmit={(e) => void submit(e)}>
        <div className="brand big">
          <span className="logo">◆</span> Inbox
        </div>
        <h1>{mode === "signIn" ? "Sign in" : "Create your account"}</h1>
        {mode === "signUp" && (
          <label>
            Name
            <input name="name" autoComplete="name" required />
          </label>
        )}
        <label>
          Email
          <input name="email" type="email" autoComplete="email" required />
        </label>
        <label>
          Password
          <input name="password" type="password" autoComplete={mode === "signIn" ? "current-password" : "new-password"} minLength={8} required />
        </label>
        {error !== null && <p className="error">{error}</p>}
        <button className="primary" type="submit" disabled={busy}>
          {mode === "signIn" ? "Sign in" : "Create account"}
        </button>
        <button type="button" className="link" onClick={() => setMode(mode === "signIn" ? "signUp" : "signIn")}>
          {mode === "signIn" ? "New here? Create an account" : "Have an account? Sign in"}
        </button>
      </form>
    </div>
  );
}
