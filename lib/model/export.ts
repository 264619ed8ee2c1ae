/**
 * Saving and loading a trained model in TensorFlow.js' LayersModel format (`model.json`
 * plus a binary weights file), which `tf.loadLayersModel` reads in a browser
 * or in Deno.
 *
 * @module
 */

import { join, resolve, sep as SEPARATOR } from "node:path";
import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
import * as tfl from "npm:@tensorflow/tfjs-layers@4.22.0";
import { DataError } from "../errors.ts";
import { writeFileAtomic } from "../util/atomic_write.ts";
import { buildModel, type ModelConfig, setFlatWeights } from "./registry.ts";

export { setFlatWeights };
import type { Normalization } from "../data/dataset.ts";

/** Name of the weights file next to `model.json`. */
export const WEIGHTS_FILE = "group1-shard1of1.bin";

/**
 * Writes the model `options.model` describes, with the flat `weights` (in
 * `model.getWeights()` order), to `dir` as `model.json` and
 * {@linkcode WEIGHTS_FILE}; `options.normalize` (the input normalisation it
 * was trained with) goes into the model's user-defined metadata. The weights
 * file is written first and `model.json` last, each atomically, so a
 * `model.json` is only ever next to complete weights. Needs an initialised
 * tfjs backend.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { exportLayersModel } from "./export.ts";
 * import { createNiN } from "./nin.ts";
 * import { initBackend } from "../train/shared/backend.ts";
 *
 * await initBackend("cpu");
 * const model = createNiN({ inputSize: 67, width: 0.125 });
 * const weights = new Float32Array(model.countParams());
 * model.dispose();
 * const dir = await Deno.makeTempDir();
 * const config = { name: "nin", options: { inputSize: 67, width: 0.125 } };
 * await exportLayersModel(weights, { dir, model: config });
 * const manifest = JSON.parse(await Deno.readTextFile(`${dir}/model.json`));
 * assert.equal(manifest.format, "layers-model");
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function exportLayersModel(
  weights: Float32Array,
  options: { dir: string; model: ModelConfig; normalize?: Normalization },
): Promise<void> {
  const model = await buildModel(options.model);
  try {
    setFlatWeights(model, weights);
    if (options.normalize) model.setUserDefinedMetadata({ normalize: options.normalize });
    await Deno.mkdir(options.dir, { recursive: true });
    await model.save(tf.io.withSaveHandler(async (artifacts) => {
      const data = artifacts.weightData;
      const bytes = data instanceof ArrayBuffer
        ? new Uint8Array(data)
        : new Uint8Array(await new Blob(data as ArrayBuffer[]).arrayBuffer());
      await writeFileAtomic(join(options.dir, WEIGHTS_FILE), bytes);
      const manifest = {
        format: "layers-model",
        generatedBy: `TensorFlow.js tfjs-layers v${tfl.version_layers}`,
        convertedBy: null,
        modelTopology: artifacts.modelTopology,
        weightsManifest: [{ paths: [WEIGHTS_FILE], weights: artifacts.weightSpecs }],
        userDefinedMetadata: artifacts.userDefinedMetadata,
      };
      await writeFileAtomic(join(options.dir, "model.json"), JSON.stringify(manifest));
      return { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: "JSON" } };
    }));
  } finally {
    model.dispose();
  }
}

/**
 * Loads a LayersModel saved by {@linkcode exportLayersModel} (or any
 * single-shard tfjs LayersModel) from `dir`. Throws a `DataError` naming the
 * file when it is missing or malformed.
 *
 * @example
 * ```ts ignore
 * import { loadLayersModelFromDir } from "./export.ts";
 *
 * const model = await loadLayersModelFromDir("./nin-model");
 * model.summary();
 * ```
 */
export async function loadLayersModelFromDir(dir: string): Promise<tfl.LayersModel> {
  const manifestPath = join(dir, "model.json");
  let manifest: {
    modelTopology?: unknown;
    weightsManifest?: { paths: string[]; weights: tf.io.WeightsManifestEntry[] }[];
    userDefinedMetadata?: Record<string, unknown>;
  };
  try {
    manifest = JSON.parse(new TextDecoder().decode(await readBounded(manifestPath, MAX_MANIFEST)));
  } catch (error) {
    if (error instanceof DataError) throw error;
    throw new DataError(`cannot read ${manifestPath}: ${(error as Error).message}`);
  }
  if (
    !manifest.modelTopology || !Array.isArray(manifest.weightsManifest) ||
    !manifest.weightsManifest.every((g) => Array.isArray(g?.paths) && Array.isArray(g?.weights))
  ) {
    throw new DataError(`${manifestPath} is not a TensorFlow.js LayersModel`);
  }
  const specs = manifest.weightsManifest.flatMap((group) => group.weights);
  // The weights' bytes, as the specs declare them: no weight file may hold more.
  let left = specs.reduce(
    (sum, spec) => sum + (spec.shape ?? []).reduce((a, b) => a * b, 1) * bytesPer(spec.dtype),
    0,
  );
  const root = resolve(dir);
  const parts: Uint8Array[] = [];
  for (const path of manifest.weightsManifest.flatMap((group) => group.paths)) {
    const full = resolve(root, String(path));
    if (!full.startsWith(root + SEPARATOR)) {
      throw new DataError(`${manifestPath} names a weights file outside ${dir}: ${path}`);
    }
    const part = await readBounded(full, left);
    left -= part.length;
    parts.push(part);
  }
  const data = await new Blob(parts as Uint8Array<ArrayBuffer>[]).arrayBuffer();
  try {
    return await tfl.loadLayersModel(
      tf.io.fromMemory({
        modelTopology: manifest.modelTopology,
        weightSpecs: specs,
        weightData: data,
        userDefinedMetadata: manifest.userDefinedMetadata ?? undefined,
      } as tf.io.ModelArtifacts),
    );
  } catch (error) {
    throw new DataError(`${manifestPath}: cannot load the model (${(error as Error).message})`);
  }
}

/** The largest `model.json` read: NiN's is 10 kB. */
const MAX_MANIFEST = 16 * 2 ** 20;

function bytesPer(dtype: string | undefined): number {
  return dtype === "float32" || dtype === "int32" || dtype === undefined ? 4 : 1;
}

/** Reads a regular file of at most `limit` bytes, or throws a `DataError` saying why not. */
async function readBounded(path: string, limit: number): Promise<Uint8Array> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(path);
  } catch (error) {
    throw new DataError(`cannot read ${path}: ${(error as Error).message}`);
  }
  if (!info.isFile) throw new DataError(`${path} is not a regular file`);
  if (info.size > limit) {
    throw new DataError(`${path} has ${info.size} bytes, more than the ${limit} expected`);
  }
  try {
    return await Deno.readFile(path);
  } catch (error) {
    throw new DataError(`cannot read ${path}: ${(error as Error).message}`);
  }
}
