// Minimal pub/sub server on Socket.IO with rooms, written the way its documentation shows.
// Events: `join` (room) -> the server emits `joined` (room) back; `pub` (room, payload) -> every
// other member of the room receives `msg` (payload). WebSocket transport only (no polling).
// Prints `listening <port>` once bound to 127.0.0.1 on a free port.
import { createServer } from 'node:http';
import { Server } from 'socket.io';

const http = createServer();
const io = new Server(http, { transports: ['websocket'], perMessageDeflate: false, serveClient: false });
io.on('connection', (socket) => {
  socket.on('join', (room) => {
    socket.join(room);
    socket.emit('joined', room);
  });
  socket.on('pub', (room, payload) => {
    socket.to(room).emit('msg', payload);
  });
});
http.listen(0, '127.0.0.1', () => console.log(`listening ${http.address().port}`));
