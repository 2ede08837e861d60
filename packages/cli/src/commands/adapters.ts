import { resolve } from "node:path";
import { booleanOption, formatOptionsHelp, loadConfig } from "@loramesh/core";
import { InvalidArgumentError } from "@loramesh/errors";
import { AdapterState, JobState, adapterStateToJSON } from "@loramesh/proto";
import { LoraMeshClient } from "@loramesh/sdk";
import type { Command } from "../command";
import { clientOptions, connection } from "../client-options";

const addOptions = {
  ...clientOptions,
  wait: booleanOption({ flag: "wait", description: "wait for the load jobs and show their progress" }),
};

function stateName(state: AdapterState): string {
  return adapterStateToJSON(state).replace("ADAPTER_STATE_", "").toLowerCase();
}

/** `loramesh adapters add|list|rm`: the calling tenant's adapters. */
export const adaptersCommand: Command = {
  name: "adapters",
  summary: "register, list or remove adapters (add NAME SOURCE [--wait] | list | rm NAME)",
  help: () =>
    `Usage:\n  loramesh adapters add NAME SOURCE [--wait]   SOURCE: a local PEFT adapter directory,\n      hf://ORG/NAME[@REVISION][/SUBDIR], s3://BUCKET/PREFIX or an http(s):// directory URL\n  loramesh adapters list\n  loramesh adapters rm NAME\n\nOptions:\n${formatOptionsHelp(addOptions)}\n`,
  async run(argv) {
    const [sub, ...rest] = argv;
    const { config, positionals } = loadConfig(addOptions, rest);
    const client = new LoraMeshClient(connection(config));
    try {
      switch (sub) {
        case "add": {
          const [name, source] = positionals;
          if (!name || !source || positionals.length > 2)
            throw new InvalidArgumentError("usage: loramesh adapters add NAME SOURCE [--wait]");
          // A URI (hf://, s3://, http(s)://) goes as it is; a path is made absolute here.
          const res = await client.registerAdapter(
            name,
            /^[a-z][a-z0-9+.-]*:\/\//i.test(source) ? source : resolve(source),
          );
          process.stdout.write(
            `registered ${name} (rank ${res.adapter?.rank}, ${res.adapter?.sizeBytes} bytes, ${res.loadJobIds.length} load jobs)\n`,
          );
          if (!config.wait) return 0;
          let failed = false;
          for await (const job of client.watchAdapterLoad(name, { deadlineMs: 10 * 60_000 })) {
            const pct = Math.round(job.progress * 100);
            const state = JobState[job.state].replace("JOB_STATE_", "").toLowerCase();
            process.stdout.write(
              `  ${job.executorId}: ${"#".repeat(Math.round(pct / 5)).padEnd(20, ".")} ${String(pct).padStart(3)}% ${state}${job.error ? ` (${job.error})` : ""}\n`,
            );
            if (job.state === JobState.JOB_STATE_FAILED) failed = true;
          }
          const adapter = await client.getAdapter(name);
          process.stdout.write(`${name}: ${stateName(adapter.state)}\n`);
          return failed || adapter.state === AdapterState.ADAPTER_STATE_FAILED ? 1 : 0;
        }
        case "list": {
          if (positionals.length > 0) throw new InvalidArgumentError("usage: loramesh adapters list");
          let token = "";
          const rows: string[][] = [["NAME", "RANK", "STATE", "SIZE", "TARGETS"]];
          do {
            const page = await client.listAdapters(100, token);
            for (const a of page.adapters)
              rows.push([a.name, String(a.rank), stateName(a.state), `${a.sizeBytes}`, a.targetModules.join(",")]);
            token = page.nextPageToken;
          } while (token !== "");
          const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length))) ?? [];
          for (const r of rows)
            process.stdout.write(
              `${r
                .map((c, i) => c.padEnd(widths[i] ?? 0))
                .join("  ")
                .trimEnd()}\n`,
            );
          return 0;
        }
        case "rm": {
          const [name] = positionals;
          if (!name || positionals.length > 1) throw new InvalidArgumentError("usage: loramesh adapters rm NAME");
          await client.deleteAdapter(name);
          process.stdout.write(`removed ${name}\n`);
          return 0;
        }
        default:
          throw new InvalidArgumentError(`unknown subcommand ${JSON.stringify(sub ?? "")}; use add, list or rm`);
      }
    } finally {
      client.close();
    }
  },
};
