// SPDX-License-Identifier: MIT
//
// ONNX Runtime (npm's onnxruntime-node, CPU execution provider) as a peer of attention_bench's
// BM_Sdpa: single-head attention as ORT's com.microsoft MultiHeadAttention operator, float32,
// batch 1, query, key and value of shape (1, N, d), one head; causal through the operator's
// `unidirectional = 1`. In ORT 1.23 the non-causal call runs MLAS's flash attention (tiles, online
// softmax, no N x N buffer); the causal one runs the unfused path, which computes the whole N x N
// product, masked half included. The environment variable ORT_DISABLE_FLASH_ATTENTION=1 (read by
// ORT) forces the unfused path everywhere.
//
// The one-node model is written in memory with onnx-proto; nothing is downloaded. Both packages
// are looked up in --ort-dir (default $ATTENTION_ORT_DIR), where benchmarks/setup_ort.sh installs
// them, so this script can stay in the repository.
//
//   node benchmarks/ort/ort_attention.mjs --ort-dir build-bench/ort --check
//   node benchmarks/ort/ort_attention.mjs --ort-dir build-bench/ort --seq 1024,4096 --dim 128 \
//        --causal 0,1 --threads 1,2
//
// Session options: intraOpNumThreads = --threads, interOpNumThreads 1, sequential execution, all
// graph optimisations. Timing as Google Benchmark's: after one warm-up call (which is also checked
// against a double reference on rows 0, N/2 and N-1), each of --repetitions samples repeats
// session.run until --min-time seconds have passed, and the time per call is the sample's mean;
// the median sample is reported. A call's time includes session.run's own cost (tens of
// microseconds: visible at N = 256), as it does for any ORT user. Output: one JSON line per
// (N, d, causal, threads), GFLOP/s with 4 N^2 d FLOPs, half that causal.

import { createRequire } from 'node:module';
import path from 'node:path';

// ---------- command line ----------
const options = {
  'ort-dir': process.env.ATTENTION_ORT_DIR ?? '',
  seq: '256,1024,4096,8192',
  dim: '64,128',
  causal: '0,1',
  threads: '1,2',
  'min-time': '0.2',
  repetitions: '3',
};
let checkOnly = false;
for (let i = 2; i < process.argv.length; ++i) {
  const arg = process.argv[i];
  if (arg === '--check') {
    checkOnly = true;
  } else if (arg === '--help' || arg === '-h') {
    console.log('usage: ort_attention.mjs --ort-dir DIR [--check] [--seq 256,1024] [--dim 64,128]' +
                ' [--causal 0,1] [--threads 1,2] [--min-time 0.2] [--repetitions 3]');
    process.exit(0);
  } else if (arg.startsWith('--') && arg.slice(2) in options && i + 1 < process.argv.length) {
    options[arg.slice(2)] = process.argv[++i];
  } else {
    console.error(`ort_attention.mjs: unknown argument ${arg} (see --help)`);
    process.exit(2);
  }
}
const numbers = (text) => text.split(',').filter((x) => x !== '').map(Number);

if (!options['ort-dir']) {
  console.error('ort_attention.mjs: pass --ort-dir DIR (or set ATTENTION_ORT_DIR): the directory ' +
                'where benchmarks/setup_ort.sh installed onnxruntime-node and onnx-proto');
  process.exit(2);
}
// Resolve the packages from --ort-dir rather than from this script's folder.
const ortDir = path.resolve(options['ort-dir']);
const requireFromOrtDir = createRequire(path.join(ortDir, 'package.json'));
let ort, onnx;
try {
  ort = requireFromOrtDir('onnxruntime-node');
  ({ onnx } = requireFromOrtDir('onnx-proto'));
} catch (e) {
  console.error(`ort_attention.mjs: cannot load onnxruntime-node / onnx-proto from ` +
                `${options['ort-dir']} (run benchmarks/setup_ort.sh): ${e.message.split('\n')[0]}`);
  process.exit(3);
}

// ---------- the model: one MultiHeadAttention node ----------
function attentionModel(seqLen, headDim, causal) {
  const float = onnx.TensorProto.DataType.FLOAT;
  const dim = [1, seqLen, headDim].map((n) => ({ dimValue: n }));
  const tensor = (name) => ({ name, type: { tensorType: { elemType: float, shape: { dim } } } });
  const int = (name, i) => ({ name, type: onnx.AttributeProto.AttributeType.INT, i });
  const attribute = [int('num_heads', 1)];
  if (causal) attribute.push(int('unidirectional', 1));
  const model = onnx.ModelProto.create({
    irVersion: 8,
    producerName: 'attention benchmarks',
    opsetImport: [{ domain: '', version: 17 }, { domain: 'com.microsoft', version: 1 }],
    graph: {
      name: 'single_head_attention',
      node: [{ name: 'attention', opType: 'MultiHeadAttention', domain: 'com.microsoft',
               input: ['query', 'key', 'value'], output: ['out'], attribute }],
      input: ['query', 'key', 'value'].map(tensor),
      output: [tensor('out')],
    },
  });
  return onnx.ModelProto.encode(model).finish();
}

// ---------- inputs and the reference ----------
// Standard normal values from a fixed seed (xorshift32 and Box-Muller): any values would time the
// same, these keep the softmax away from one-hot rows.
function normals(count, seed) {
  let state = seed >>> 0 || 1;
  const uniform = () => {
    state ^= state << 13; state >>>= 0;
    state ^= state >>> 17;
    state ^= state << 5; state >>>= 0;
    return (state + 0.5) / 4294967296;
  };
  const values = new Float32Array(count);
  for (let i = 0; i < count; i += 2) {
    const radius = Math.sqrt(-2 * Math.log(uniform())), angle = 2 * Math.PI * uniform();
    values[i] = radius * Math.cos(angle);
    if (i + 1 < count) values[i + 1] = radius * Math.sin(angle);
  }
  return values;
}

// Largest |out - reference| over rows 0, N/2 and N-1, where in double
//   out_i = sum_{j <= i if causal} softmax_j(q_i . k_j / sqrt(d)) v_j.
function maxErrorOnThreeRows(q, k, v, out, seqLen, headDim, causal) {
  let error = 0;
  for (const i of [0, seqLen >> 1, seqLen - 1]) {
    const keys = causal ? i + 1 : seqLen;
    const s = new Float64Array(keys);
    let rowMax = -Infinity;
    for (let j = 0; j < keys; ++j) {
      let dot = 0;
      for (let c = 0; c < headDim; ++c) dot += q[i * headDim + c] * k[j * headDim + c];
      s[j] = dot / Math.sqrt(headDim);
      rowMax = Math.max(rowMax, s[j]);
    }
    let rowSum = 0;
    for (let j = 0; j < keys; ++j) rowSum += (s[j] = Math.exp(s[j] - rowMax));
    for (let c = 0; c < headDim; ++c) {
      let acc = 0;
      for (let j = 0; j < keys; ++j) acc += s[j] * v[j * headDim + c];
      error = Math.max(error, Math.abs(acc / rowSum - out[i * headDim + c]));
    }
  }
  return error;
}

// ---------- one configuration ----------
const seconds = () => Number(process.hrtime.bigint()) * 1e-9;

async function measure(seqLen, headDim, causal, threads) {
  const record = { impl: 'ort_mha', N: seqLen, d: headDim, causal, threads,
                   ort_version: ort.env.versions?.node ?? '', node: process.version,
                   flash_disabled: process.env.ORT_DISABLE_FLASH_ATTENTION === '1' ? 1 : 0 };
  const session = await ort.InferenceSession.create(attentionModel(seqLen, headDim, causal), {
    executionProviders: ['cpu'], intraOpNumThreads: threads, interOpNumThreads: 1,
    executionMode: 'sequential', graphOptimizationLevel: 'all', logSeverityLevel: 3,
  });
  try {
    const size = seqLen * headDim, dims = [1, seqLen, headDim];
    const q = normals(size, 1), k = normals(size, 2), v = normals(size, 3);
    const feeds = { query: new ort.Tensor('float32', q, dims),
                    key: new ort.Tensor('float32', k, dims),
                    value: new ort.Tensor('float32', v, dims) };
    const out = (await session.run(feeds)).out.data;  // warm-up and check
    const maxAbsV = v.reduce((m, x) => Math.max(m, Math.abs(x)), 0);
    record.max_abs_err = maxErrorOnThreeRows(q, k, v, out, seqLen, headDim, causal);
    // float32 rounding stays far below 1e-3 max|v|; a wrong scale or mask is of order max|v| / 10.
    if (!(record.max_abs_err <= 1e-3 * maxAbsV)) {
      record.error = `output off by ${record.max_abs_err} from the double reference`;
      return record;
    }
    if (checkOnly) return record;

    const minTime = Number(options['min-time']), samples = [];
    let calls = 0;
    for (let r = 0; r < Number(options.repetitions); ++r) {
      const start = seconds();
      let elapsed = 0;
      for (calls = 0; calls === 0 || elapsed < minTime; ++calls) {
        await session.run(feeds);
        elapsed = seconds() - start;
      }
      samples.push(elapsed / calls);
    }
    samples.sort((a, b) => a - b);
    const median = samples[samples.length >> 1];
    const flops = 4 * seqLen * seqLen * headDim * (causal ? 0.5 : 1);
    const round = (x, digits) => Number(x.toPrecision(digits));
    Object.assign(record, {
      median_ms: round(median * 1e3, 5), min_ms: round(samples[0] * 1e3, 5),
      max_ms: round(samples[samples.length - 1] * 1e3, 5), calls_per_sample: calls,
      gflops_median: round(flops / median * 1e-9, 4),
    });
    return record;
  } finally {
    await session.release();
  }
}

// ---------- main ----------
const configs = [];
if (checkOnly) {  // small and odd shapes: every row of the reference differs
  for (const causal of [0, 1]) configs.push([17, 64, causal, 1], [33, 128, causal, 2]);
} else {
  for (const n of numbers(options.seq)) for (const d of numbers(options.dim))
    for (const causal of numbers(options.causal)) for (const t of numbers(options.threads))
      configs.push([n, d, causal, t]);
}
let failures = 0;
for (const [n, d, causal, threads] of configs) {
  let record;
  try {
    record = await measure(n, d, causal, threads);
  } catch (e) {
    const error = String(e.message ?? e).split('\n')[0];
    record = { impl: 'ort_mha', N: n, d, causal, threads, error };
  }
  if (record.error) ++failures;
  console.log(JSON.stringify(record));
}
process.exitCode = failures ? 1 : 0;
