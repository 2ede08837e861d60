/* eslint-disable @typescript-eslint/unbound-method -- client methods are passed with their client to unary(), which re-binds them */
/** The router's view of the provisioner: the tenant-scoped adapter registry, in domain types. */
import { credentials, Metadata } from "@grpc/grpc-js";
import { clusterClientOptions, GRPC_CHANNEL_OPTIONS } from "@loramesh/core";
import { DeadlineExceededError, UnavailableError } from "@loramesh/errors";
import { unary } from "@loramesh/mesh";
import {
  ProvisionerServiceClient,
  type Adapter,
  type LoadJobStatus,
  type PrefetchAdapterRequest,
  type PrefetchAdapterResponse,
  type TenantAdapterRequest,
  type TenantDeleteAdapterResponse,
  type TenantListAdaptersRequest,
  type TenantListAdaptersResponse,
  type TenantRegisterAdapterRequest,
  type TenantRegisterAdapterResponse,
} from "@loramesh/proto";
import type { AdapterPage, AdapterRecord, AdapterSourceRef, LoadJob } from "../domain/types";
import { adapterFromProto, loadJobFromProto, sourceToProto } from "../proto-mapping";
import { AdapterCache } from "./adapter-cache";
import { fromPeer } from "./peer-errors";

/** A lookup on the request path waits this long for the provisioner, then the cache answers. */
const LOOKUP_DEADLINE_MS = 3_000;
/**
 * Registering from a remote source downloads and hashes the adapter first (tens to hundreds of MiB
 * over a WAN link), so the unary default of 10 s would fail large adapters; the caller's own
 * deadline, when it has one, still ends the call first.
 */
const REMOTE_REGISTER_DEADLINE_MS = 600_000;

export interface Registration {
  adapter: AdapterRecord | undefined;
  loadJobIds: string[];
}

export class ProvisionerGateway {
  private readonly client: ProvisionerServiceClient;
  private readonly cache = new AdapterCache();

  constructor(address: string) {
    this.client = new ProvisionerServiceClient(address, credentials.createInsecure(), {
      ...GRPC_CHANNEL_OPTIONS,
      ...clusterClientOptions(),
    });
  }

  private async call<Req, Res>(
    method: Parameters<typeof unary<Req, Res>>[0],
    request: Req,
    deadlineMs?: number,
  ): Promise<Res> {
    try {
      return await unary<Req, Res>(method, this.client, request, deadlineMs !== undefined ? { deadlineMs } : {});
    } catch (err) {
      throw fromPeer(err, "the provisioner");
    }
  }

  /**
   * The tenant's adapter. While the provisioner cannot answer, the last answer it gave is used
   * (the adapter's placement is cached by the placement view too), so serving continues.
   */
  async getAdapter(tenant: string, name: string): Promise<AdapterRecord> {
    try {
      const a = await this.call<TenantAdapterRequest, Adapter>(
        this.client.getAdapter,
        { tenant, name },
        LOOKUP_DEADLINE_MS,
      );
      const record = adapterFromProto(a);
      this.cache.remember(tenant, name, record);
      return record;
    } catch (err) {
      const cached = this.cache.recall(tenant, name);
      if (cached && (err instanceof UnavailableError || err instanceof DeadlineExceededError)) return cached;
      throw err;
    }
  }

  async registerAdapter(
    tenant: string,
    name: string,
    source: AdapterSourceRef | undefined,
    deadline?: Date | number,
  ): Promise<Registration> {
    const remote = source !== undefined && "uri" in source;
    const at = deadline instanceof Date ? deadline.getTime() : (deadline ?? Infinity); // Infinity: none
    const callerMs = Number.isNaN(at) ? Infinity : at - Date.now();
    const deadlineMs = remote ? Math.max(1, Math.min(REMOTE_REGISTER_DEADLINE_MS, callerMs)) : undefined;
    const res = await this.call<TenantRegisterAdapterRequest, TenantRegisterAdapterResponse>(
      this.client.registerAdapter,
      { tenant, name, ...(source !== undefined ? { source: sourceToProto(source) } : {}) },
      deadlineMs,
    );
    return { adapter: res.adapter && adapterFromProto(res.adapter), loadJobIds: res.loadJobIds };
  }

  /** Tells the provisioner a request for a non-resident adapter was admitted (its load should start). */
  async prefetchAdapter(adapterId: string): Promise<string[]> {
    const res = await this.call<PrefetchAdapterRequest, PrefetchAdapterResponse>(this.client.prefetchAdapter, {
      adapterId,
    });
    return res.loadJobIds;
  }

  async listAdapters(tenant: string, pageSize: number, pageToken: string): Promise<AdapterPage> {
    const res = await this.call<TenantListAdaptersRequest, TenantListAdaptersResponse>(this.client.listAdapters, {
      tenant,
      pageSize,
      pageToken,
    });
    return { adapters: res.adapters.map(adapterFromProto), nextPageToken: res.nextPageToken };
  }

  async deleteAdapter(tenant: string, name: string): Promise<void> {
    this.cache.forget(tenant, name);
    await this.call<TenantAdapterRequest, TenantDeleteAdapterResponse>(this.client.deleteAdapter, { tenant, name });
  }

  /** Streams the adapter's load jobs until they settle; aborting the signal ends the watch. */
  async *watchAdapterLoad(
    tenant: string,
    name: string,
    control: { signal?: AbortSignal; deadline?: Date | number },
  ): AsyncGenerator<LoadJob> {
    const stream = this.client.watchAdapterLoad({ tenant, name }, new Metadata(), {
      ...(control.deadline !== undefined ? { deadline: control.deadline } : {}),
    });
    const cancel = (): void => stream.cancel();
    control.signal?.addEventListener("abort", cancel);
    try {
      for await (const job of stream as AsyncIterable<LoadJobStatus>) yield loadJobFromProto(job);
    } catch (err) {
      throw fromPeer(err, "the provisioner");
    } finally {
      control.signal?.removeEventListener("abort", cancel);
    }
  }

  close(): void {
    this.client.close();
  }
}
