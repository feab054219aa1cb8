// Runs a GGUF file in llama.cpp (node-llama-cpp's prebuilt CPU build), for bench/llama_cpp.py.
// argv[2]: the file URL of node-llama-cpp's entry point; stdin: {model, prompts, max_tokens, tokenize, score}.
// Prints {tokens: the ids of each `tokenize` text, completions: each prompt's greedy continuation,
// log_likelihoods: for each `score` text, the log-probability llama.cpp gives each of its tokens after the ones
// before it (teacher forcing, from the raw logits: no sampler option applies)}.
const {getLlama, LlamaCompletion} = await import(process.argv[2]);
let input = "";
for await (const chunk of process.stdin) input += chunk;
const job = JSON.parse(input);
const llama = await getLlama({gpu: false, build: "never"});
const model = await llama.loadModel({modelPath: job.model});
// One thread: two spinning threads on a 2-core machine that also runs the test took 25 s for 8 tokens (0.5 s alone).
const context = await model.createContext({contextSize: 512, threads: 1});
const completions = [];
for (const prompt of job.prompts) {
  const sequence = context.getSequence();
  const completion = new LlamaCompletion({contextSequence: sequence});
  completions.push(await completion.generateCompletion(prompt, {maxTokens: job.max_tokens, temperature: 0}));
  sequence.dispose();
}
const logLikelihoods = [];
const scoring = context.getSequence();
for (const text of job.score ?? []) {
  const tokens = Array.from(model.tokenize(text));
  await scoring.clearHistory();
  const input = tokens.map((token, i) => (i + 1 < tokens.length ? [token, {generateNext: {logits: true}}] : token));
  const output = await scoring.controlledEvaluate(input);
  const scores = [];
  for (let i = 0; i + 1 < tokens.length; i++) {
    const logits = Array.from(output[i].next.logits.values());
    const top = Math.max(...logits);
    const logSumExp = top + Math.log(logits.reduce((sum, logit) => sum + Math.exp(logit - top), 0));
    scores.push(output[i].next.logits.get(tokens[i + 1]) - logSumExp);
  }
  logLikelihoods.push(scores);
}
scoring.dispose();
const tokens = job.tokenize.map((text) => Array.from(model.tokenize(text)));
console.log(JSON.stringify({tokens, completions, log_likelihoods: logLikelihoods}));
