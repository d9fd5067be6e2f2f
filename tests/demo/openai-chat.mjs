// The README tour's OpenAI SDK client: the official `openai` npm package, unmodified, configured
// only by its own environment variables (OPENAI_BASE_URL pointing at `tollgate proxy`,
// OPENAI_API_KEY). Makes one plain and one streamed chat completion and prints both answers.
import OpenAI from 'openai';

const prompt = process.argv[2] || 'Say hi';
const client = new OpenAI();
const plain = await client.chat.completions.create({ model: 'demo-model', messages: [{ role: 'user', content: prompt }] });
console.log(`plain:    ${plain.choices[0].message.content}  (${plain.usage.total_tokens} tokens)`);
const stream = await client.chat.completions.create({
  model: 'demo-model', stream: true, stream_options: { include_usage: true },
  messages: [{ role: 'user', content: prompt }],
});
let text = '', usage = null, chunks = 0;
for await (const chunk of stream) {
  chunks++;
  text += chunk.choices[0]?.delta?.content ?? '';
  if (chunk.usage) usage = chunk.usage;
}
console.log(`streamed: ${text}  (${chunks} chunks, ${usage ? usage.total_tokens : '?'} tokens)`);
