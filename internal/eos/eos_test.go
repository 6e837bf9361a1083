package eos

import (
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/iotpipe/iotpipe/internal/config"
	"github.com/iotpipe/iotpipe/internal/kafkax"
)

func TestConfigValidate(t *testing.T) {
	var c Config
	err := c.Validate()
	want := map[string]bool{"Group": true, "InstanceID": true, "TransactionalID": true, "Inputs": true, "Changelog": true,
		"CommitInterval": true, "MaxPollRecords": true, "RestoreTimeout": true, "ShutdownTimeout": true, "Subsystem": true}
	for _, fe := range config.Fields(err) {
		delete(want, fe.Field)
	}
	if len(want) > 0 {
		t.Errorf("no problem reported for %v in %v", want, err)
	}
	c = Config{Kafka: kafkax.DefaultConfig("x"), Group: "g", InstanceID: "i", TransactionalID: "t", Inputs: []string{"in"},
		Changelog: "cl", CommitInterval: 1, MaxPollRecords: 1, RestoreTimeout: 1, ShutdownTimeout: 1, Subsystem: "s"}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
}

// Changelog records go to the partition they name (their input
// partition's number); other records by key.
func TestChangelogPartitioner(t *testing.T) {
	p := changelogPartitioner{changelog: "cl", byKey: kgo.StickyKeyPartitioner(nil)}
	r := &kgo.Record{Topic: "cl", Partition: 3, Key: []byte("k")}
	if got := p.ForTopic("cl").Partition(r, 6); got != 3 {
		t.Errorf("changelog record to partition %d, want 3", got)
	}
	out := &kgo.Record{Topic: "out", Key: []byte("device-7")}
	a, b := p.ForTopic("out").Partition(out, 6), p.ForTopic("out").Partition(out, 6)
	if a != b {
		t.Errorf("keyed record to partitions %d and %d: not by key", a, b)
	}
}
