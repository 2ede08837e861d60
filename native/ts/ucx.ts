/**
 * Types of the UCX site transport's binding (native/addon/ucx_binding.cpp). The LoRA server owns a
 * UCX server (a native thread with a UCP worker and a listener that batches and computes every
 * connected worker's sites); a worker holds a site backend per remote LoRA server, connected to the
 * host, port and session key the server's `AttachUcx` RPC returned.
 */
declare const ucxServerBrand: unique symbol;
/** Opaque handle of a LoRA server's UCX server. */
export type UcxServerHandle = { readonly [ucxServerBrand]: true };

export interface UcxInfo {
  /** Whether this build of the addon links UCX (libucx-dev was found at build time). */
  available: boolean;
  /** The linked UCX version, "" without UCX. */
  version: string;
}

export interface UcxServerOptions {
  numLayers: number;
  /** 0 for a dense model. */
  numExperts: number;
  /** Input and output width of each site, in qkv, o, gate_up, down order. */
  hIn: readonly number[];
  nOut: readonly number[];
  /** The host the listener binds (the LoRA server's advertised host); the OS picks the port. */
  bindHost: string;
}

export interface UcxAttachment {
  host: string;
  port: number;
  /** A per-worker session key (32 hex digits) every request must carry. */
  key: string;
}

export interface UcxServerStats {
  nativeCalls: number;
  workItems: number;
  rows: number;
  /** Endpoints open now. */
  connected: number;
  /** Requests refused: an unknown session key or a malformed header. */
  rejected: number;
}

declare const ucxRegionServerBrand: unique symbol;
/** Opaque handle of a holder's UCX RMA server (peer adapter fetch). */
export type UcxRegionServerHandle = { readonly [ucxRegionServerBrand]: true };

/** A registered region: what a fetcher needs for one RMA get. */
export interface UcxRegionOffer {
  id: number;
  /** The region's address in the holder's process (user space, below 2^53). */
  address: number;
  length: number;
  /** The packed remote key (ucp_rkey_pack). */
  rkey: Buffer;
}

export interface UcxRegionStats {
  /** Regions registered now and their bytes. */
  regions: number;
  bytes: number;
  /** RMA connections accepted, and refused (their address was not expected). */
  accepted: number;
  refused: number;
}
