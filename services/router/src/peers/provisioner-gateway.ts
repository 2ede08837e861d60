/* eslint-disable @typescript-eslint/unbound-method -- client methods are passed with their client to unary(), which re-binds them */
/** The router's view of the provisioner: the tenant-scoped adapter registry, in domain types. */
import { credentials, Metadata } from "@grpc/grpc-js";
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
import { fromPeer } from "./peer-errors";

export interface Registration {
  adapter: AdapterRecord | undefined;
  loadJobIds: string[];
}

export class ProvisionerGateway {
  private readonly client: ProvisionerServiceClient;

  constructor(address: string) {
    this.client = new ProvisionerServiceClient(address, credentials.createInsecure());
  }

  private async call<Req, Res>(method: Parameters<typeof unary<Req, Res>>[0], request: Req): Promise<Res> {
    try {
      return await unary<Req, Res>(method, this.client, request);
    } catch (err) {
      throw fromPeer(err, "the provisioner");
    }
  }

  async getAdapter(tenant: string, name: string): Promise<AdapterRecord> {
    const a = await this.call<TenantAdapterRequest, Adapter>(this.client.getAdapter, { tenant, name });
    return adapterFromProto(a);
  }

  async registerAdapter(tenant: string, name: string, source: AdapterSourceRef | undefined): Promise<Registration> {
    const res = await this.call<TenantRegisterAdapterRequest, TenantRegisterAdapterResponse>(
      this.client.registerAdapter,
      { tenant, name, ...(source !== undefined ? { source: sourceToProto(source) } : {}) },
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
