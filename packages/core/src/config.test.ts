import { expect } from "chai";
import { addressOption, booleanOption, enumOption, formatOptionsHelp, intOption, loadConfig } from "./config";
import { ConfigError } from "@loramesh/errors";

const specs = {
  listen: addressOption({ flag: "listen", env: "TEST_LISTEN", default: "127.0.0.1:0", description: "where to listen" }),
  workers: intOption({ flag: "workers", env: "TEST_WORKERS", default: 1, min: 1, max: 8, description: "workers" }),
  mode: enumOption({
    flag: "mode",
    default: "coupled",
    values: ["coupled", "disaggregated", "hybrid"] as const,
    description: "mode",
  }),
  verbose: booleanOption({ flag: "verbose", description: "more logs" }),
  upstream: addressOption({ flag: "upstream", env: "TEST_UPSTREAM", description: "required upstream" }),
};

describe("config", () => {
  it("takes flags over environment over defaults and keeps positionals", () => {
    const { config, positionals } = loadConfig(specs, ["--workers=3", "--verbose", "prompt", "--upstream", "h:1"], {
      TEST_WORKERS: "5",
      TEST_LISTEN: "0.0.0.0:9000",
    });
    expect(config).to.deep.equal({
      listen: "0.0.0.0:9000",
      workers: 3,
      mode: "coupled",
      verbose: true,
      upstream: "h:1",
    });
    expect(positionals).to.deep.equal(["prompt"]);
  });

  it("reports every problem at once with the flag or variable that caused it", () => {
    try {
      loadConfig(specs, ["--workers", "9", "--mode", "turbo", "--bogus"], { TEST_LISTEN: "nowhere" });
      expect.fail("should have thrown");
    } catch (err) {
      expect(err).to.be.instanceOf(ConfigError);
      const problems = (err as ConfigError).problems;
      expect(problems).to.include("unknown flag --bogus");
      expect(problems.some((p) => p.startsWith("--workers: must be at most 8"))).to.equal(true);
      expect(problems.some((p) => p.startsWith("--mode: expected one of coupled, disaggregated, hybrid"))).to.equal(
        true,
      );
      expect(problems.some((p) => p.startsWith("$TEST_LISTEN: expected HOST:PORT"))).to.equal(true);
      expect(problems.some((p) => p.startsWith("missing --upstream (or $TEST_UPSTREAM)"))).to.equal(true);
    }
  });

  it("rejects non-integers and a flag without its value", () => {
    expect(() => loadConfig(specs, ["--upstream", "h:1", "--workers", "2.5"], {})).to.throw(
      ConfigError,
      /expected an integer/,
    );
    expect(() => loadConfig(specs, ["--upstream"], {})).to.throw(ConfigError, /--upstream needs a value/);
  });

  it("prints help from the same declarations", () => {
    const help = formatOptionsHelp(specs);
    expect(help).to.match(/--workers N\s+workers \(env TEST_WORKERS; default 1\)/);
    expect(help).to.match(/--mode coupled\|disaggregated\|hybrid/);
  });
});
