package bridge

import (
	"bytes"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// bufferedConn writes PUBACKs as paho does (reason code and an empty
// property length), in the order
// they were queued and after what was written before them, with or
// without an interval between writes; Close writes what is pending, and
// nothing is accepted after it.
func TestBufferedConnPubacks(t *testing.T) {
	for _, interval := range []time.Duration{0, 20 * time.Millisecond} {
		client, server := net.Pipe()
		c := newBufferedConn(client, interval)
		got := make(chan []byte, 1)
		go func() {
			b, _ := io.ReadAll(server)
			got <- b
		}()
		if _, err := c.Write([]byte{0xc0, 0x00}); err != nil { // a PINGREQ
			t.Fatal(err)
		}
		for _, id := range []uint16{1, 0x1234, 0xffff} {
			if err := c.puback(id); err != nil {
				t.Fatal(err)
			}
		}
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		want := []byte{0xc0, 0x00, 0x40, 0x04, 0x00, 0x01, 0x00, 0x00, 0x40, 0x04, 0x12, 0x34, 0x00, 0x00, 0x40, 0x04, 0xff, 0xff, 0x00, 0x00}
		select {
		case b := <-got:
			if !bytes.Equal(b, want) {
				t.Errorf("interval %s: wrote % x, want % x", interval, b, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("interval %s: nothing written", interval)
		}
		if err := c.puback(2); !errors.Is(err, net.ErrClosed) {
			t.Errorf("interval %s: puback after Close = %v, want net.ErrClosed", interval, err)
		}
		if _, err := c.Write([]byte{0}); !errors.Is(err, net.ErrClosed) {
			t.Errorf("interval %s: Write after Close = %v, want net.ErrClosed", interval, err)
		}
	}
}

// A PUBACK that cannot be written (the peer is gone) makes the connection
// refuse further ones, so that the bridge does not count on them.
func TestBufferedConnWriteError(t *testing.T) {
	client, server := net.Pipe()
	c := newBufferedConn(client, 0)
	server.Close()
	if err := c.puback(1); err != nil {
		t.Fatal(err) // queued: the error shows on the write
	}
	deadline := time.Now().Add(10 * time.Second)
	for c.writableErr() == nil {
		if time.Now().After(deadline) {
			t.Fatal("a failed write did not make the connection refuse writes")
		}
		time.Sleep(time.Millisecond) // polling the flusher's state
	}
	if err := c.puback(2); err == nil {
		t.Fatal("puback accepted after a failed write")
	}
	_ = c.Close()
}
