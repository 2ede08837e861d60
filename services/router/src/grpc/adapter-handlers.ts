/** gRPC AdapterService: maps the tenant's adapter calls to the router domain and back to proto. */
import { serverStreamHandler, unaryHandler, type Logger } from "@loramesh/core";
import type { AdapterServiceServer } from "@loramesh/proto";
import type { Router } from "../domain/router";
import { adapterToProto, loadJobToProto } from "../proto-mapping";
import type { Tenants } from "../tenants";

export function adapterHandlers(router: Router, tenants: Tenants, logger: Logger): AdapterServiceServer {
  return {
    registerAdapter: unaryHandler(logger, async (request, call) => {
      const source = request.source?.source;
      const res = await router.registerAdapter(
        tenants.resolve(call.metadata),
        request.name,
        source?.$case === "uri"
          ? { uri: source.value }
          : source?.$case === "localDir"
            ? { localDir: source.value }
            : undefined,
        call.getDeadline(),
      );
      return { adapter: res.adapter && adapterToProto(res.adapter), loadJobIds: res.loadJobIds };
    }),
    listAdapters: unaryHandler(logger, async (request, call) => {
      const page = await router.listAdapters(tenants.resolve(call.metadata), request.pageSize, request.pageToken);
      return { adapters: page.adapters.map(adapterToProto), nextPageToken: page.nextPageToken };
    }),
    getAdapter: unaryHandler(logger, async (request, call) =>
      adapterToProto(await router.getAdapter(tenants.resolve(call.metadata), request.name)),
    ),
    deleteAdapter: unaryHandler(logger, async (request, call) => {
      await router.deleteAdapter(tenants.resolve(call.metadata), request.name);
      return {};
    }),
    watchAdapterLoad: serverStreamHandler(logger, async (request, call) => {
      const aborter = new AbortController();
      call.on("cancelled", () => aborter.abort());
      const jobs = router.watchAdapterLoad(tenants.resolve(call.metadata), request.name, {
        signal: aborter.signal,
        deadline: call.getDeadline(),
      });
      for await (const job of jobs) call.write(loadJobToProto(job));
    }),
  };
}
