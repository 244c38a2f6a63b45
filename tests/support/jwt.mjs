// HS256 tokens for tests, made with Node's crypto (no library needed).

import { createHmac } from "node:crypto";

const b64 = (data) => Buffer.from(data).toString("base64url");

export function jwt(claims, secret) {
  const header = b64(JSON.stringify({ alg: "HS256", typ: "JWT" }));
  const body = b64(JSON.stringify(claims));
  const signature = createHmac("sha256", secret).update(`${header}.${body}`).digest("base64url");
  return `${header}.${body}.${signature}`;
}
