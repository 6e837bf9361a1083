package bridge

import (
	"bufio"
	"net"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho/session"
)

// This file holds the MQTT connection as the bridge sees it, and how it
// acknowledges messages.
//
// paho's manual acknowledgements cost the bridge more than anything else
// it did per message (profile of BenchmarkBridgeDrain): a linear search
// of every message in flight on each receive and on each Ack, and a
// PUBACK built with about ten allocations and written every AckInterval
// through several small writes. The bridge already releases messages in
// receive order (window), so it writes the PUBACKs itself: paho runs with
// automatic acknowledgements, ackSession turns paho's immediate ones into
// nothing, and release appends the six bytes of each PUBACK to the
// connection that delivered the message, which writes them out at once
// (with whatever else was released meanwhile). A PUBACK still leaves only
// after Kafka acknowledged the message's record.

// bufferedConn buffers both directions of the MQTT connection. paho
// reads each packet with several small reads (fixed header, length,
// body) and writes each packet with several writes: one system call each
// on a bare connection. Reads go through a bufio.Reader (only paho's
// reader goroutine reads). Writes, paho's and the bridge's PUBACKs, are
// appended to a buffer that a flusher goroutine writes out at once:
// writes made while one flush is under way go out together in the next.
// With an interval, the flusher waits that long after a write before the
// next one, so that more goes out together. Close flushes what is pending
// first.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader

	mu      sync.Mutex
	pending []byte
	err     error
	closed  bool
	wake    chan struct{} // a signal: something is pending; closed by Close
	closing chan struct{} // closed by Close: no more waiting between writes
	done    chan struct{} // closed when the flusher ends
}

func newBufferedConn(conn net.Conn, interval time.Duration) *bufferedConn {
	c := &bufferedConn{Conn: conn, r: bufio.NewReaderSize(conn, 64<<10),
		wake: make(chan struct{}, 1), closing: make(chan struct{}), done: make(chan struct{})}
	go c.flusher(interval)
	return c
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

func (c *bufferedConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.writableLocked(); err != nil {
		return 0, err
	}
	c.pending = append(c.pending, p...)
	c.signal()
	return len(p), nil
}

// puback queues the PUBACK (reason code 0 Success, no properties; the
// bytes paho writes) of the QoS 1 message with packet id id. It
// fails once the connection is closed or broken: the broker then
// redelivers the message on the next connection.
func (c *bufferedConn) puback(id uint16) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.writableLocked(); err != nil {
		return err
	}
	c.pending = append(c.pending, packets.PUBACK<<4, 4, byte(id>>8), byte(id), 0, 0)
	c.signal()
	return nil
}

// writableErr is why nothing can be written any more (nil: it can).
func (c *bufferedConn) writableErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.writableLocked()
}

func (c *bufferedConn) writableLocked() error {
	if c.err != nil {
		return c.err
	}
	if c.closed {
		return net.ErrClosed
	}
	return nil
}

// signal wakes the flusher (under c.mu).
func (c *bufferedConn) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

func (c *bufferedConn) flusher(interval time.Duration) {
	defer close(c.done)
	var out []byte
	var t *time.Timer
	if interval > 0 {
		t = time.NewTimer(interval)
		t.Stop()
	}
	for {
		_, open := <-c.wake
		c.mu.Lock()
		out, c.pending = c.pending, out[:0]
		c.mu.Unlock()
		if len(out) > 0 {
			if _, err := c.Conn.Write(out); err != nil {
				c.mu.Lock()
				c.err = err
				c.mu.Unlock()
			}
		}
		if !open {
			return
		}
		if t != nil {
			t.Reset(interval)
			select {
			case <-t.C:
			case <-c.closing:
				t.Stop()
			}
		}
	}
}

func (c *bufferedConn) Close() error {
	c.mu.Lock()
	if !c.closed {
		c.closed = true
		close(c.closing)
		close(c.wake) // the flusher writes what is pending, then ends
	}
	c.mu.Unlock()
	t := time.NewTimer(2 * time.Second)
	select {
	case <-c.done:
	case <-t.C: // a write stuck on a dead peer: closing unblocks it
	}
	t.Stop()
	return c.Conn.Close()
}

// ackSession is paho's session state with the acknowledgements of
// received messages left to the bridge: paho (automatic
// acknowledgements) calls Ack as soon as onPublish returns, which must not
// acknowledge anything; the bridge acknowledges in release instead
// (QoS 1: bufferedConn.puback; QoS 2, which the bridge's QoS 1
// subscriptions never receive: ackLater).
type ackSession struct {
	session.SessionManager
}

// Ack does nothing: see ackSession (a QoS 0 message needs no
// acknowledgement).
func (s ackSession) Ack(*packets.Publish) error { return nil }

// ackLater acknowledges a QoS 2 message as paho would have (PUBREC,
// recorded in the session).
func (s ackSession) ackLater(pb *packets.Publish) error { return s.SessionManager.Ack(pb) }
