package bridge

import (
	"sync"

	"github.com/eclipse/paho.golang/paho"
)

// inflight is one message the bridge took from the broker and has not
// yet acknowledged to it.
type inflight struct {
	p    *paho.Publish
	cli  *paho.Client
	done bool // Kafka answered (or the message is given up for redelivery)
	ack  bool // Kafka stored its record: send the PUBACK
}

// window holds the messages in flight in the order the broker delivered
// them, and releases them in that order only.
//
// paho sends manual acknowledgements in receive order: a PUBACK waits
// until every earlier message is acknowledged too. Records of one
// connection go to many partitions and Kafka answers them out of order,
// so freeing a message's in-flight slot as soon as Kafka stored it would
// let the bridge take (and store) ever more messages behind one slow
// record while their PUBACKs wait in paho; a crash then makes all of them
// duplicates. Releasing slots in receive order keeps the stored but not
// yet acknowledged messages within the in-flight limit, so a crash
// duplicates at most ReceiveMaximum messages, whatever the broker sends.
type window struct {
	mu         sync.Mutex
	ring       []*inflight // capacity = the in-flight limit (slots)
	head, size int
}

// push appends a message; the caller holds one of the slots, so the ring
// has room.
func (w *window) push(p *paho.Publish, cli *paho.Client) *inflight {
	e := &inflight{p: p, cli: cli}
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
