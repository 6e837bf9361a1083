package bridge

import (
	"context"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho/log"
)

// pinger is the bridge's MQTT keep-alive (a paho.Pinger). It sends a
// PINGREQ when nothing was sent or received for a keep-alive period, like
// paho's DefaultPinger, but it judges the connection differently.
//
// paho's reader goroutine hands each PUBLISH to the router and waits
// while the router is busy, and the bridge's router waits for an
// in-flight slot while Kafka is slow: back-pressure stops reading, by
// design. A PINGRESP then sits in the socket behind messages the bridge
// has not read yet, and DefaultPinger, which wants it within one
// keep-alive period, drops a healthy connection. Under overload that is
// costly: every message the broker had sent is redelivered (Mosquitto
// 2.0.11, which sends past the Receive Maximum, redelivered about a
// million in one benchmark run), and the bridge stores them again.
//
// This pinger declares the connection dead only when a ping it sent 1.5
// keep-alive periods ago has had no packet at all come back since, and
// the bridge has not held back reading within that time either.
// A half-open connection is still found: once the bridge reads again and
// nothing arrives, the rule fires a keep-alive period later.
type pinger struct {
	// heldBack returns when the bridge last held back reading (now while
	// it does; zero if never).
	heldBack func() time.Time

	mu       sync.Mutex
	lastSent time.Time
	lastRecv time.Time

	// For the heartbeats: the connection of the running Run (nil between
	// connections), the send times of the PINGREQs not answered yet,
	// oldest first, and the send time of the last one answered. PINGRESPs
	// carry no id; each is taken for the oldest unanswered PINGREQ, which
	// never credits the broker with more than it answered.
	conn     net.Conn
	pings    []time.Time
	answered time.Time
}

func newPinger(heldBack func() time.Time) *pinger {
	return &pinger{heldBack: heldBack}
}

// Run sends pings on conn and returns an error when the connection is
// judged dead, nil when ctx ends.
func (p *pinger) Run(ctx context.Context, conn net.Conn, keepAlive uint16) error {
	if keepAlive == 0 {
		return nil
	}
	if conn == nil {
		return fmt.Errorf("conn is nil")
	}
	interval := time.Duration(keepAlive) * time.Second
	// As the broker grants the client 1.5 keep-alive periods (MQTT
	// 3.1.2-22), a busy broker gets as long to answer.
	grace := interval * 3 / 2
	p.mu.Lock()
	start := time.Now()
	p.lastSent, p.lastRecv = start, start
	p.conn, p.pings, p.answered = conn, nil, time.Time{}
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		p.conn, p.pings = nil, nil
		p.mu.Unlock()
	}()
	tick := time.NewTicker(max(interval/4, 50*time.Millisecond))
	defer tick.Stop()
	errCh := make(chan error, 1)
	// pingSent is the last ping; waiting is the first ping since which
	// nothing has come back (zero: none).
	var pingSent, waiting time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-errCh:
			return err
		case now := <-tick.C:
			p.mu.Lock()
			sent, recv := p.lastSent, p.lastRecv
			p.mu.Unlock()
			if !waiting.IsZero() && !recv.Before(waiting) {
				waiting = time.Time{} // something came back
			}
			if !waiting.IsZero() && now.Sub(waiting) >= grace && now.Sub(p.heldBack()) >= grace {
				return fmt.Errorf("no answer to PINGREQ and no packet from the broker for %s", now.Sub(waiting).Round(time.Millisecond))
			}
			if now.Sub(sent) < interval && now.Sub(recv) < interval {
				continue
			}
			if !pingSent.IsZero() && now.Sub(pingSent) < interval {
				continue // at most one ping per keep-alive period
			}
			pingSent = now
			if waiting.IsZero() {
				waiting = now
			}
			p.mu.Lock()
			p.pings = append(p.pings, time.Now())
			p.mu.Unlock()
			go func() {
				// A write can block on a congested link; closing the
				// connection unblocks it, so this does not leak.
				if _, err := packets.NewControlPacket(packets.PINGREQ).WriteTo(conn); err != nil {
					select {
					case errCh <- fmt.Errorf("failed to send PINGREQ: %w", err):
					default:
					}
				}
			}()
		}
	}
}

// PacketSent is called by paho for every packet it sends.
func (p *pinger) PacketSent() {
	p.mu.Lock()
	p.lastSent = time.Now()
	p.mu.Unlock()
}

// PacketReceived is called by paho for every packet it reads.
func (p *pinger) PacketReceived() {
	p.mu.Lock()
	p.lastRecv = time.Now()
	p.mu.Unlock()
}

// PingResp is called by paho for a PINGRESP (PacketReceived was called
// for it too).
func (p *pinger) PingResp() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.pings) > 0 {
		p.answered = p.pings[0]
		p.pings = p.pings[1:]
	}
}

// probe sends a PINGREQ now, for the heartbeats, unless one is
// unanswered or there is no connection. The broker queues its PINGRESP
// behind every message it had for the bridge (unless the in-flight limit
// holds them back, which the heartbeats check apart), and paho's reader
// hands each PUBLISH to the bridge before it reads the next packet: once
// it is answered, every message the broker had before the PINGREQ has
// reached onPublish.
func (p *pinger) probe() {
	p.mu.Lock()
	defer p.mu.Unlock()
	conn := p.conn
	if conn == nil || len(p.pings) > 0 {
		return
	}
	p.pings = append(p.pings, time.Now())
	go func() {
		// As in Run: closing the connection unblocks a stuck write, and a
		// failed write is Run's to find (no answer).
		_, _ = packets.NewControlPacket(packets.PINGREQ).WriteTo(conn)
	}()
}

// roundTrip returns the send time of the last PINGREQ answered on this
// connection (zero if none) and of the oldest one unanswered (zero if
// none).
func (p *pinger) roundTrip() (answered, waiting time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.pings) > 0 {
		waiting = p.pings[0]
	}
	return p.answered, waiting
}

// SetDebug is part of paho.Pinger; the bridge logs through slog, and
// paho reports Run's error (OnClientError).
func (p *pinger) SetDebug(log.Logger) {}
