package bridge

import (
	"sync"

	"github.com/eclipse/paho.golang/paho"
)

// inflight is one message the bridge took from the broker and has not
// yet acknowledged to it.
type inflight struct {
	p    *paho.Publish
	conn *bufferedConn // the connection that delivered p
	done bool          // Kafka answered (or the message is given up for redelivery)
	ack  bool          // Kafka stored its record: send the PUBACK
	at   int64         // receive time (UnixNano), for the heartbeats
}

// window holds the messages in flight in the order the broker delivered
// them, and releases them in that order only.
//
// paho sends manual acknowledgements in receive order: a PUBACK waits
// until every earlier message is acknowledged too. Records of one
// connection go to many partitions and Kafka answers them out of order.
// If a slot were freed as soon as Kafka stored its record, a broker that
// sends past the Receive Maximum (Mosquitto before 2.0.13 does) could
// have the bridge store any number of messages behind one slow record
// while their PUBACKs wait in paho. Releasing slots in receive order
// keeps the stored-but-unacknowledged messages within the in-flight limit
// whatever the broker does. (With a broker that honours the Receive
// Maximum the broker's own limit bounds them too: measured on Mosquitto
// 2.0.20, 10 SIGKILLs under load gave 9,693 duplicates with this window
// and 6,634–8,370 without, both within 10 × 1,000. On 2.0.11 the
// duplicates stay unbounded either way: that broker redelivers messages
// the bridge had acknowledged; see doc.go.)
type window struct {
	mu         sync.Mutex
	ring       []*inflight // capacity = the in-flight limit (slots)
	head, size int
}

// push appends a message; the caller holds one of the slots, so the ring
// has room.
func (w *window) push(p *paho.Publish, conn *bufferedConn, at int64) *inflight {
	e := &inflight{p: p, conn: conn, at: at}
	w.mu.Lock()
	w.ring[(w.head+w.size)%len(w.ring)] = e
	w.size++
	w.mu.Unlock()
	return e
}

// complete marks e done and releases, in receive order, every done
// message at the front of the window.
func (w *window) complete(e *inflight, release func(*inflight)) {
	w.mu.Lock()
	defer w.mu.Unlock()
	e.done = true
	for w.size > 0 {
		f := w.ring[w.head]
		if !f.done {
			return
		}
		w.ring[w.head] = nil
		w.head = (w.head + 1) % len(w.ring)
		w.size--
		release(f)
	}
}
