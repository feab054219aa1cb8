// Runs a GGUF file in llama.cpp (node-llama-cpp's prebuilt CPU build), for bench/llama_cpp.py.
// argv[2]: the file URL of node-llama-cpp's entry point; stdin: {model, prompts, max_tokens, tokenize}.
// Prints {tokens: the ids of each `tokenize` text, completions: each prompt's greedy continuation}.
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
console.log(JSON.stringify({tokens: job.tokenize.map((text) => Array.from(model.tokenize(text))), completions}));
