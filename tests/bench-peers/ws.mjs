// Minimal pub/sub server on ws, written the way its README shows (a Set of sockets per topic).
// Wire (text frames): `sub <topic>` -> `subscribed <topic>`; `pub <topic> <payload>` -> every
// subscriber of <topic> (not the sender) receives <payload>.
// Prints `listening <port>` once bound to 127.0.0.1 on a free port.
import { WebSocketServer } from 'ws';

const topics = new Map();
const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: false });
wss.on('connection', (ws) => {
  const mine = new Set();
  ws.on('message', (data) => {
    const text = data.toString();
    const space = text.indexOf(' ');
    const verb = text.slice(0, space);
    if (verb === 'sub') {
      const topic = text.slice(space + 1);
      if (!topics.has(topic)) topics.set(topic, new Set());
      topics.get(topic).add(ws);
      mine.add(topic);
      ws.send(`subscribed ${topic}`);
    } else if (verb === 'pub') {
      const rest = text.slice(space + 1);
      const gap = rest.indexOf(' ');
      const payload = rest.slice(gap + 1);
      for (const peer of topics.get(rest.slice(0, gap)) ?? []) {
        if (peer !== ws) peer.send(payload);
      }
    }
  });
  ws.on('close', () => {
    for (const topic of mine) topics.get(topic)?.delete(ws);
  });
});
wss.on('listening', () => console.log(`listening ${wss.address().port}`));
