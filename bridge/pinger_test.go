package bridge

import (
	"context"
	"io"
	"net"
	"testing"
	"testing/synctest"
	"time"
)

// runPinger runs a pinger with a 1 s keep-alive on one end of a pipe whose
// other end is read (and discarded) until the test ends; during runs
// behave is called every 100 ms. It returns Run's result after d.
func runPinger(t *testing.T, d time.Duration, heldBack func() time.Time, behave func(*pinger)) error {
	t.Helper()
	client, server := net.Pipe()
	defer client.Close()
	defer server.Close()
	go func() { _, _ = io.Copy(io.Discard, server) }() // ends when the pipe closes
	p := newPinger(heldBack)
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx, client, 1) }()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			return err
		case <-tick.C:
			if behave != nil {
				behave(p)
			}
		}
	}
}

func never() time.Time { return time.Time{} }

func TestPingerDeadBrokerIsFound(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		err := runPinger(t, 10*time.Second, never, nil)
		if err == nil {
			t.Fatal("a silent broker was not noticed in 10 s")
		}
		if el := time.Since(start); el > 3*time.Second {
			t.Fatalf("noticed after %s, want within about two keep-alive periods", el)
		}
	})
}

func TestPingerTrafficKeepsConnection(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// No PINGRESP ever, but packets keep arriving (e.g. a flood of
		// PUBLISHes ahead of the PINGRESP): alive.
		if err := runPinger(t, 10*time.Second, never, func(p *pinger) { p.PacketReceived() }); err != nil {
			t.Fatal(err)
		}
	})
}

func TestPingerBackPressureKeepsConnection(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// Nothing arrives because the bridge is not reading (every
		// in-flight slot taken): alive for as long as that lasts.
		holding := true
		held := func() time.Time {
			if holding {
				return time.Now()
			}
			return time.Time{}
		}
		if err := runPinger(t, 10*time.Second, held, nil); err != nil {
			t.Fatal(err)
		}
		// Once the bridge reads again and still nothing comes, it is dead.
		var last time.Time
		released := time.Now()
		held2 := func() time.Time {
			if time.Since(released) < 2*time.Second {
				last = time.Now()
			}
			return last
		}
		err := runPinger(t, 10*time.Second, held2, nil)
		if err == nil {
			t.Fatal("a silent broker was not noticed after the back-pressure ended")
		}
		if el := time.Since(released); el < 2*time.Second || el > 5*time.Second {
			t.Fatalf("noticed %s after the back-pressure began to end, want between 2 s and about 4 s", el)
		}
	})
}
