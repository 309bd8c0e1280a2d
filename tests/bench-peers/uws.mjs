// Minimal pub/sub server on uWebSockets.js, written the way its documentation shows:
// topics are uWS's own (`subscribe` / `publish`).
// Wire (text frames): `sub <topic>` -> `subscribed <topic>`; `pub <topic> <payload>` -> every
// subscriber of <topic> (not the sender) receives <payload>.
// Prints `listening <port>` once bound to 127.0.0.1 on a free port.
import uWS from '@trufflesuite/uws-js-unofficial';

const decoder = new TextDecoder();
const app = uWS.App().ws('/*', {
  compression: uWS.DISABLED,
  maxPayloadLength: 64 * 1024,
  // The benchmark sends bursts: let the queue grow rather than drop or close.
  maxBackpressure: 64 * 1024 * 1024,
  closeOnBackpressureLimit: false,
  idleTimeout: 0,
  sendPingsAutomatically: false,
  message: (ws, message) => {
    const text = decoder.decode(message);
    const space = text.indexOf(' ');
    const verb = text.slice(0, space);
    if (verb === 'sub') {
      const topic = text.slice(space + 1);
      ws.subscribe(topic);
      ws.send(`subscribed ${topic}`);
    } else if (verb === 'pub') {
      const rest = text.slice(space + 1);
      const gap = rest.indexOf(' ');
      ws.publish(rest.slice(0, gap), rest.slice(gap + 1));
    }
  },
});
app.listen('127.0.0.1', 0, (socket) => {
  if (!socket) {
    console.error('uws: cannot listen');
    process.exit(1);
  }
  console.log(`listening ${uWS.us_socket_local_port(socket)}`);
});
