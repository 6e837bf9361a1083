package bridge

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// The producer lingers while the in-flight window is less than half full,
// and sends at once when it is half full or more.
func TestFlushIfBusy(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "raw"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.DefaultProduceTopic("raw"), kgo.ProducerLinger(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	b := &Bridge{slots: make(chan struct{}, 4)}
	done := make(chan error, 1)
	cl.Produce(context.Background(), &kgo.Record{Value: []byte("r")}, func(_ *kgo.Record, err error) { done <- err })

	b.slots <- struct{}{} // 1 of 4 taken: keep lingering
	b.flushIfBusy(cl)
	select {
	case err := <-done:
		t.Fatalf("record sent with the window a quarter full (linger 1m): %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	if b.flushing.Load() {
		t.Fatal("a flush started with the window a quarter full")
	}

	b.slots <- struct{}{} // 2 of 4: half full, send now
	b.flushIfBusy(cl)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("produce: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("record not sent within 10s with the window half full")
	}
}
