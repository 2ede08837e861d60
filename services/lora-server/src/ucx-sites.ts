/**
 * The LoRA server's UCX side: the native UCX server (`@loramesh/lora-wire` UcxServer), started on
 * the first `AttachUcx` with its listener on the host this server advertises, fed the same packed
 * adapter tables as the shared-memory rings. Without UCX in the native core, attach refuses with
 * FAILED_PRECONDITION and workers keep the Execute stream.
 */
import type { Logger } from "@loramesh/core";
import { FailedPreconditionError } from "@loramesh/errors";
import type { ModelConfig } from "@loramesh/formats";
import { ucxSupport, UcxServer } from "@loramesh/lora-wire";
import type { RingSiteTable, UcxServerStats } from "@loramesh/native";

export class UcxSites {
  private server: UcxServer | undefined;
  private host: string | undefined;
  private tables: { slots: readonly string[]; sites: readonly RingSiteTable[] } = { slots: [], sites: [] };
  private stopped = false;

  constructor(
    private readonly model: ModelConfig,
    private readonly logger: Logger,
  ) {}

  /** The address this server advertises (host:port); the listener binds its host. */
  advertise(address: string): void {
    const host = address.startsWith("[") ? address.slice(1, address.indexOf("]")) : address.replace(/:\d+$/, "");
    this.host = host;
  }

  setTables(slots: readonly string[], sites: readonly RingSiteTable[]): void {
    this.tables = { slots, sites };
    this.server?.setTables(slots, sites);
  }

  /** The listener's address and a session key for one worker (starting the listener on first use). */
  attach(workerId: string): { host: string; port: number; key: string; version: string } {
    const support = ucxSupport();
    if (!support.available) throw new FailedPreconditionError("this LoRA server's native core was built without UCX");
    if (this.stopped) throw new FailedPreconditionError("the LoRA server is stopping");
    if (this.host === undefined) throw new FailedPreconditionError("the LoRA server is not serving yet");
    if (!this.server) {
      this.server = new UcxServer({ model: this.model, bindHost: this.host });
      this.server.setTables(this.tables.slots, this.tables.sites);
      this.logger.info("UCX listener started", { host: this.host, ucx: support.version });
    }
    return { ...this.server.attach(workerId), version: support.version };
  }

  stats(): UcxServerStats | undefined {
    return this.server?.stats();
  }

  stop(): void {
    this.stopped = true;
    this.server?.stop();
    this.server = undefined;
  }
}
