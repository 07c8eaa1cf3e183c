/**
 * Typed queries and writes over a collection. The generated `api.ts` calls
 * {@link collection} once per collection; apps use what it returns
 * (`api.workItems.byOwnerFeed({ ownerId }).orderBy("priority", "desc").limit(20)`).
 *
 * Everything here is an immutable value: builders return new queries, and a
 * query's {@link Query.key} identifies it in the client's cache.
 *
 * @module
 */

import type { JsonObject, JsonValue } from "./json.js";
import type { FilterOp, WireCondition, WireOperation, WireOrder, WireQuery, WireTarget } from "./wire.js";

/** The largest window a query may hold (`Query.limit`, 1 to 1000). */
export const MAX_QUERY_LIMIT = 1000;

/**
 * What the generated code tells the runtime about one collection.
 * `fields` maps each comparable field path (`"sender.email"`) to the value a
 * filter on it takes.
 */
export interface CollectionTypes {
  readonly name: string;
  readonly doc: object;
  readonly input: object;
  readonly fields: object;
  /** Whether an insert may leave out its id, for the server to make one (a UUIDv7): `true` since protosync makes ids. */
  readonly serverIds: boolean;
}

/** A document as the server sends it: id, version, the seq of its last write, and its body. */
export interface Document<D> {
  readonly id: string;
  /** 1, 2, 3 … per document, as a decimal string. */
  readonly version: string;
  /** The commit that last wrote it, as a decimal string. */
  readonly seq: string;
  readonly doc: D;
}

/** A comparable field path of a collection. */
export type FieldOf<T extends CollectionTypes> = keyof T["fields"] & string;

/** Equality conditions: field path → value (`null` matches a missing field). */
export type Equalities<T extends CollectionTypes> = {
  readonly [K in FieldOf<T>]?: T["fields"][K] | null;
};

/** An operator other than `in`. */
export type ComparisonOp = Exclude<FilterOp, "in">;

/** The sort direction of an `orderBy`. */
export type Direction = "asc" | "desc";

/** What `protosync codegen ts` passes to {@link collection}. */
export interface CollectionOptions<Name extends string> {
  readonly name: Name;
  /** The proto message's full name. */
  readonly message: string;
  /** The field that mirrors the document id, if the schema names one. */
  readonly idField: string | null;
  /** Index name → its field paths, in key order. */
  readonly indexes: { readonly [index: string]: readonly string[] };
}

/** Options of a single write. */
export interface WriteOptions {
  /** The write fails with `VERSION_CONFLICT` unless the document has this version. */
  readonly expectedVersion?: string | number;
}

/** The kind of a write. */
export type OperationKind = "insert" | "upsert" | "patch" | "delete";

/** One write of a mutation, made by a collection's `insert` / `upsert` / `patch` / `delete`. */
export interface Operation<T extends CollectionTypes = CollectionTypes> {
  readonly kind: OperationKind;
  readonly collection: T["name"];
  /** Empty for an insert whose id the server makes: the mutation's result names it. */
  readonly id: string;
  /** insert, upsert: the whole document; patch: the top-level fields to set. */
  readonly body: T["input"] | undefined;
  readonly expectedVersion: string | undefined;
}

/** A live query: a collection, filters, order, a window (`limit`) and an optional cursor. */
export class Query<T extends CollectionTypes> {
  /** Discriminates queries from {@link GetQuery}. */
  readonly kind = "query" as const;
  readonly collection: T["name"];
  readonly #conditions: readonly WireCondition[];
  readonly #order: readonly WireOrder[];
  readonly #limit: number | undefined;
  readonly #cursor: string | undefined;
  /** Type-only: the collection these results belong to. */
  declare readonly __types?: T;

  /** Apps use a collection's builders instead (`api.workItems.where(…)`). */
  constructor(
    collection: T["name"],
    conditions: readonly WireCondition[] = [],
    order: readonly WireOrder[] = [],
    limit?: number,
    cursor?: string,
  ) {
    this.collection = collection;
    this.#conditions = conditions;
    this.#order = order;
    this.#limit = limit;
    this.#cursor = cursor;
  }

  /** Adds equality conditions (all must hold). */
  where(eq: Equalities<T>): Query<T> {
    const added: WireCondition[] = [];
    for (const [field, value] of Object.entries(eq as { [k: string]: JsonValue | undefined })) {
      if (value !== undefined) added.push({ field, op: "==", value });
    }
    return this.#with({ conditions: [...this.#conditions, ...added] });
  }

  /** Adds one condition: a comparison, or `in` with a list of 1 to 256 values. */
  filter<K extends FieldOf<T>>(field: K, op: ComparisonOp, value: T["fields"][K] | null): Query<T>;
  filter<K extends FieldOf<T>>(field: K, op: "in", values: readonly (T["fields"][K] | null)[]): Query<T>;
  filter(field: string, op: FilterOp, value: unknown): Query<T> {
    return this.#with({ conditions: [...this.#conditions, { field, op, value: value as JsonValue }] });
  }

  /** Adds a sort field (most significant first). Ties break by id, in the last field's direction. */
  orderBy(field: FieldOf<T>, direction: Direction = "asc"): Query<T> {
    return this.#with({ order: [...this.#order, { field, direction }] });
  }

  /** The window size: the first `n` results (1 to 1000; default 100). */
  limit(n: number): Query<T> {
    if (!Number.isInteger(n) || n < 1 || n > MAX_QUERY_LIMIT) {
      throw new RangeError(`limit must be an integer from 1 to ${MAX_QUERY_LIMIT}, not ${n}`);
    }
    return this.#with({ limit: n });
  }

  /** Starts the window after a `nextCursor` from `fetchQuery` (`./server`). */
  after(cursor: string): Query<T> {
    return this.#with({ cursor });
  }

  /** The window size, if set. */
  get windowSize(): number | undefined {
    return this.#limit;
  }

  /** The query as the protocol sends it. */
  toWire(): WireQuery {
    const wire: WireQuery = { collection: this.collection };
    if (this.#conditions.length > 0) wire.filter = this.#conditions.map((c) => ({ ...c }));
    if (this.#order.length > 0) wire.orderBy = this.#order.map((o) => ({ ...o }));
    if (this.#limit !== undefined) wire.limit = this.#limit;
    if (this.#cursor !== undefined) wire.cursor = this.#cursor;
    return wire;
  }

  /** What a subscription to this query is on. */
  target(): WireTarget {
    return { query: this.toWire() };
  }

  /** Identifies the query in caches: equal keys, equal queries. */
  get key(): string {
    return JSON.stringify(this.target());
  }

  #with(change: {
    conditions?: readonly WireCondition[];
    order?: readonly WireOrder[];
    limit?: number;
    cursor?: string;
  }): Query<T> {
    return new Query<T>(
      this.collection,
      change.conditions ?? this.#conditions,
      change.order ?? this.#order,
      change.limit ?? this.#limit,
      change.cursor ?? this.#cursor,
    );
  }
}

/** A live read of one document by id; its result is the document or `null`. */
export class GetQuery<T extends CollectionTypes> {
  /** Discriminates gets from {@link Query}. */
  readonly kind = "get" as const;
  readonly collection: T["name"];
  readonly id: string;
  /** Type-only: the collection this document belongs to. */
  declare readonly __types?: T;

  constructor(collection: T["name"], id: string) {
    this.collection = collection;
    this.id = id;
  }

  /** What a subscription to this document is on. */
  target(): WireTarget {
    return { get: { collection: this.collection, id: this.id } };
  }

  /** Identifies the get in caches. */
  get key(): string {
    return JSON.stringify(this.target());
  }
}

/** Any query or get, of any collection. */
export type AnyQuery = Query<CollectionTypes> | GetQuery<CollectionTypes>;

/** What a query holds: its documents in order; for a get, the document or `null`. */
export type ResultOf<Q> =
  Q extends Query<infer T> ? readonly Document<T["doc"]>[] : Q extends GetQuery<infer T> ? Document<T["doc"]> | null : never;

/** The typed operations and query builders of one collection. */
export interface CollectionApi<T extends CollectionTypes> {
  readonly name: T["name"];
  readonly message: string;
  readonly idField: string | null;
  readonly indexes: { readonly [index: string]: readonly string[] };
  /** Every document (sorted by id, first 100 unless `limit` says otherwise). */
  all(): Query<T>;
  /** Equality conditions; see {@link Query.where}. */
  where(eq: Equalities<T>): Query<T>;
  /** One condition; see {@link Query.filter}. */
  filter<K extends FieldOf<T>>(field: K, op: ComparisonOp, value: T["fields"][K] | null): Query<T>;
  filter<K extends FieldOf<T>>(field: K, op: "in", values: readonly (T["fields"][K] | null)[]): Query<T>;
  /** Sorted; see {@link Query.orderBy}. */
  orderBy(field: FieldOf<T>, direction?: Direction): Query<T>;
  /** A window; see {@link Query.limit}. */
  limit(n: number): Query<T>;
  /** One document by id. */
  get(id: string): GetQuery<T>;
  /** Creates a document; fails with `ALREADY_EXISTS` if the id is taken. */
  insert(id: string, doc: T["input"], options?: WriteOptions): Operation<T>;
  /**
   * Creates a document with an id the server makes (a UUIDv7, time-ordered),
   * unless the doc's id field names one; the mutation's `results` carry it.
   */
  insertNew(doc: T["input"], options?: WriteOptions): Operation<T>;
  /** Creates or replaces a whole document (fields left out get their defaults). */
  upsert(id: string, doc: T["input"], options?: WriteOptions): Operation<T>;
  /** Sets top-level fields of an existing document (`null` clears one); `NOT_FOUND` if absent. */
  patch(id: string, fields: T["input"], options?: WriteOptions): Operation<T>;
  /** Deletes a document; `NOT_FOUND` if absent. */
  delete(id: string, options?: WriteOptions): Operation<T>;
}

/** Builds a collection's typed API. Called by generated code. */
export function collection<T extends CollectionTypes>(options: CollectionOptions<T["name"]>): CollectionApi<T> {
  const name = options.name;
  const all = new Query<T>(name);
  const write =
    (kind: OperationKind) =>
    (id: string, body: T["input"] | undefined, writeOptions?: WriteOptions): Operation<T> => ({
      kind,
      collection: name,
      id,
      body,
      expectedVersion: writeOptions?.expectedVersion === undefined ? undefined : String(writeOptions.expectedVersion),
    });
  const filter = (field: string, op: FilterOp, value: unknown): Query<T> =>
    (all.filter as (f: string, o: FilterOp, v: unknown) => Query<T>)(field, op, value);
  return {
    name,
    message: options.message,
    idField: options.idField,
    indexes: options.indexes,
    all: () => all,
    where: (eq) => all.where(eq),
    filter,
    orderBy: (field, direction) => all.orderBy(field, direction),
    limit: (n) => all.limit(n),
    get: (id) => new GetQuery<T>(name, id),
    insert: write("insert"),
    insertNew: (doc, writeOptions) => write("insert")("", doc, writeOptions),
    upsert: write("upsert"),
    patch: write("patch"),
    delete: (id, writeOptions) => write("delete")(id, undefined, writeOptions),
  };
}

/** An operation as the protocol (and the HTTP API) sends it. */
export function operationToWire(op: Operation): WireOperation {
  const write: { collection: string; id?: string; doc?: JsonObject; fields?: JsonObject; expectedVersion?: string } = {
    collection: op.collection,
  };
  if (op.id !== "") write.id = op.id;
  if (op.body !== undefined) {
    const body = JSON.parse(JSON.stringify(op.body)) as JsonObject;
    if (op.kind === "patch") write.fields = body;
    else write.doc = body;
  }
  if (op.expectedVersion !== undefined) write.expectedVersion = op.expectedVersion;
  switch (op.kind) {
    case "insert":
      return { insert: write };
    case "upsert":
      return { upsert: write };
    case "patch":
      return { patch: write };
    case "delete":
      return { delete: write };
  }
}
