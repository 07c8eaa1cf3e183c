/**
 * The sync protocol's JSON frames (proto3 JSON of `proto/protosync/v1/sync.proto`),
 * as this client sends and reads them. uint64 fields are decimal strings;
 * the server leaves out fields at their default, so most are optional here.
 *
 * These are the wire contract, not an app schema: app types come from
 * `protosync codegen ts`.
 *
 * @module
 */

import type { JsonObject, JsonValue } from "./json.js";

/** The protocol version this client speaks (`Hello.protocolVersion`). */
export const PROTOCOL_VERSION = 1;

/** The WebSocket subprotocol for JSON frames. */
export const JSON_SUBPROTOCOL = "protosync.v1.json";

/** A filter condition's operator. */
export type FilterOp = "==" | "!=" | "<" | "<=" | ">" | ">=" | "in";

/** `Condition`. */
export interface WireCondition {
  field: string;
  op: FilterOp;
  value: JsonValue;
}

/** `Order`. */
export interface WireOrder {
  field: string;
  direction: "asc" | "desc";
}

/** `Query`: the same query as `POST /v1/query`. */
export interface WireQuery {
  collection: string;
  filter?: WireCondition[];
  orderBy?: WireOrder[];
  limit?: number;
  cursor?: string;
}

/** `Get`. */
export interface WireGet {
  collection: string;
  id: string;
}

/** `HeldDocument`. */
export interface WireHeld {
  id: string;
  seq: string;
}

/** What a subscription is on: a query or one document. */
export type WireTarget = { query: WireQuery } | { get: WireGet };

/** `Subscribe`. */
export type WireSubscribe = WireTarget & { subscriptionId: string; held?: WireHeld[] };

/** `Write`. */
export interface WireWrite {
  collection: string;
  /** Absent on an insert whose id the server makes. */
  id?: string;
  doc?: JsonObject;
  fields?: JsonObject;
  expectedVersion?: string;
}

/** `Operation`: exactly one member. */
export type WireOperation =
  | { insert: WireWrite }
  | { upsert: WireWrite }
  | { patch: WireWrite }
  | { delete: WireWrite };

/** `Mutate`. */
export interface WireMutate {
  requestId: string;
  idempotencyKey: string;
  ops: WireOperation[];
}

/** `Resume`. */
export interface WireResume {
  sessionId: string;
  watermark: string;
  subscriptions: WireSubscribe[];
}

/** `Hello`. */
export interface WireHello {
  protocolVersion: number;
  schemaFingerprint?: string;
  resume?: WireResume;
  token?: string;
}

/** `Call`. */
export interface WireCall {
  requestId: string;
  action: string;
  args: JsonObject;
  idempotencyKey?: string;
}

/** `CallResult`. */
export interface WireCallResult {
  requestId: string;
  result?: JsonObject;
  seq?: string;
  duplicate?: boolean;
}

/** `ClientMessage`. */
export type ClientMessage =
  | { hello: WireHello }
  | { authenticate: { token: string } }
  | { subscribe: WireSubscribe }
  | { unsubscribe: { subscriptionId: string } }
  | { mutate: WireMutate }
  | { ping: { nonce: string } }
  | { call: WireCall };

/** `Limits`. */
export interface WireLimits {
  maxFrameBytes?: number;
  maxSubscriptions?: number;
  maxInflightMutations?: number;
  idleTimeoutMs?: number;
  maxInflightCalls?: number;
}

/** `Welcome`. */
export interface WireWelcome {
  sessionId?: string;
  protocolVersion?: number;
  schemaFingerprint?: string;
  watermark?: string;
  logFloor?: string;
  heartbeatIntervalMs?: number;
  limits?: WireLimits;
}

/** `Document`. */
export interface WireDocument {
  id: string;
  version?: string;
  seq?: string;
  doc?: JsonObject;
}

/** `SubscriptionUpdate`. */
export interface WireUpdate {
  subscriptionId: string;
  reset?: boolean;
  resetReason?: string;
  logFloor?: string;
  upserts?: WireDocument[];
  removes?: string[];
  order?: { ids?: string[] };
}

/** `Transition`. */
export interface WireTransition {
  fromWatermark?: string;
  toWatermark?: string;
  updates?: WireUpdate[];
  chunk?: number;
  chunks?: number;
}

/** `OpResult`. */
export interface WireOpResult {
  id: string;
  version?: string;
}

/** `MutationResult`. */
export interface WireMutationResult {
  requestId: string;
  seq?: string;
  results?: WireOpResult[];
  duplicate?: boolean;
}

/** `Error`. */
export interface WireError {
  code: string;
  message?: string;
  requestId?: string;
  subscriptionId?: string;
  path?: string;
}

/** `ServerMessage`. Members this client does not know are ignored. */
export interface ServerMessage {
  welcome?: WireWelcome;
  transition?: WireTransition;
  mutationResult?: WireMutationResult;
  error?: WireError;
  heartbeat?: { serverTimeMs?: string; headSeq?: string };
  pong?: { nonce?: string };
  authOk?: { expiresAt?: string };
  callResult?: WireCallResult;
}
