/**
 * `deno run -R -W scripts/trace_svg.ts TRACE.json OUT.svg [TITLE]`: draws a
 * trace that `--trace` wrote (see `lib/util/trace_svg.ts`), for docs or a
 * first look where Perfetto is not at hand.
 *
 * @module
 */

import { traceSvg } from "../lib/util/trace_svg.ts";
import { writeFileAtomic } from "../lib/util/atomic_write.ts";

const [input, output, title] = Deno.args;
if (input === undefined || output === undefined) {
  console.error("usage: deno run -R -W scripts/trace_svg.ts TRACE.json OUT.svg [TITLE]");
  Deno.exit(2);
}
let trace;
try {
  trace = JSON.parse(await Deno.readTextFile(input));
} catch (error) {
  console.error(
    `cannot read the trace ${input}: ${error instanceof Error ? error.message : error}`,
  );
  Deno.exit(1);
}
if (!Array.isArray(trace?.traceEvents)) {
  console.error(`${input} is not a Chrome trace (no traceEvents array)`);
  Deno.exit(1);
}
await writeFileAtomic(output, traceSvg(trace, { title: title ?? input }));
console.log(`wrote ${output}`);
