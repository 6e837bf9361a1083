package bridge

import (
	"context"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/twmb/franz-go/pkg/kgo"
)

// inflight is one message the bridge took from the broker and has not
// yet acknowledged to it. It is also the storage of the message's record
// and that record's Context (context.Background() otherwise), so that one
// promise function (Bridge.produced) finds the message of a record.
// Entries belong to the window's ring and are reused once released: a
// message needs no allocation of the bridge's own (rec, hdr and buf keep
// their capacity).
type inflight struct {
	context.Context

	p     *paho.Publish
	conn  *bufferedConn // the connection that delivered p
	now   time.Time     // receive time
	done  bool          // Kafka answered (or the message is given up for redelivery)
	ack   bool          // Kafka stored its record: send the PUBACK
	isRaw bool          // its record is a route's output, not a dead letter

	rec kgo.Record          // the record of a route that builds it here (telemetry)
	hdr [3]kgo.RecordHeader // rec's headers
	buf []byte              // rec's key, value and header bytes
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
// has room. The entry it returns is the message's until complete releases
// it.
func (w *window) push(p *paho.Publish, conn *bufferedConn, now time.Time) *inflight {
	w.mu.Lock()
	i := (w.head + w.size) % len(w.ring)
	e := w.ring[i]
	if e == nil {
		e = &inflight{Context: context.Background()}
		w.ring[i] = e
	}
	e.p, e.conn, e.now = p, conn, now
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
		w.head = (w.head + 1) % len(w.ring)
		w.size--
		release(f)
		f.reset()
	}
}

// reset empties a released entry for its next message, keeping the
// capacity of its buffers and dropping its references (the payload, the
// connection).
func (e *inflight) reset() {
	buf := e.buf[:0]
	if cap(buf) > maxKeptBuf {
		buf = nil // a rare large message: do not keep its room for good
	}
	*e = inflight{Context: e.Context, buf: buf}
}

// maxKeptBuf is the largest record buffer a window entry keeps for its
// next message.
const maxKeptBuf = 4 << 10
