//go:build integration

package setup_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/iotpipe/iotpipe/internal/setup"
	"github.com/iotpipe/iotpipe/internal/testenv"
)

func kafkaOnly(t testing.TB, env *testenv.Env, names ...string) setup.Config {
	kc := env.KafkaConfig(t, testenv.Admin)
	kc.ClientID = "setup-test"
	cfg := setup.Config{
		Kafka:             kc,
		ReplicationFactor: -1,
		MinInsyncReplicas: -1,
		Timeout:           20 * time.Second,
		Skip:              map[setup.Component]bool{setup.Postgres: true, setup.S3: true},
	}
	for _, n := range names {
		cfg.Topics = append(cfg.Topics, setup.Topic{Name: n, Partitions: 2, Purpose: "test",
			Configs: map[string]string{"retention.ms": "3600000"}})
	}
	return cfg
}

func deleteTopics(t *testing.T, env *testenv.Env, names ...string) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, _ = env.KafkaAdmin(t).DeleteTopics(ctx, names...)
	})
}

// Issue 13: a second init right after the first reported "created" for
// topics that existed. Every run after the first, and a run right after
// another client created the topic, reports them as existing.
func TestQuickSecondRunReportsExisting(t *testing.T) {
	env := testenv.Load(t)
	ctx := testenv.Context(t, time.Minute)
	a, b := testenv.Name(t, "a"), testenv.Name(t, "b")
	deleteTopics(t, env, a, b)
	cfg := kafkaOnly(t, env, a, b)
	for run := 1; run <= 3; run++ {
		rep, err := setup.Run(ctx, cfg, nil)
		if err != nil {
			t.Fatalf("run %d: %v", run, err)
		}
		for _, tr := range rep.Topics {
			want := "unchanged"
			if run == 1 {
				want = "created"
			}
			if tr.Action != want {
				t.Errorf("run %d: topic %s %s, want %s", run, tr.Name, tr.Action, want)
			}
			if tr.ReplicationFactor != 1 || tr.MinInsyncReplicas != 1 {
				t.Errorf("run %d: topic %s replication %d/%d, want 1/1 on the single broker", run, tr.Name, tr.ReplicationFactor, tr.MinInsyncReplicas)
			}
		}
	}
	// Created by someone else an instant before: ListTopics may not list it
	// yet and CreateTopics then answers TOPIC_ALREADY_EXISTS.
	for i := range 5 {
		c := testenv.Name(t, "c")
		deleteTopics(t, env, c)
		resp, err := env.KafkaAdmin(t).CreateTopic(ctx, 2, -1, nil, c)
		if err == nil {
			err = resp.Err
		}
		if err != nil {
			t.Fatal(err)
		}
		rep, err := setup.Run(ctx, kafkaOnly(t, env, c), nil)
		if err != nil {
			t.Fatal(err)
		}
		// retention.ms differs from what the other client created: restored.
		if got := rep.Topics[0].Action; got != "updated" {
			t.Errorf("attempt %d: topic created just before by another client reported %q, want updated", i, got)
		}
	}
}

// Unsafe settings are refused before anything is created.
func TestRefusesUnsafeReplication(t *testing.T) {
	env := testenv.Load(t)
	ctx := testenv.Context(t, time.Minute)
	for _, tc := range []struct {
		name     string
		rf, misr int16
	}{
		{"rf above the live brokers", 3, -1},
		{"min.insync.replicas above rf", 1, 2},
		{"min.insync.replicas above the broker default rf", -1, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := testenv.Name(t, "u")
			deleteTopics(t, env, n)
			cfg := kafkaOnly(t, env, n)
			cfg.ReplicationFactor, cfg.MinInsyncReplicas = tc.rf, tc.misr
			_, err := setup.Run(ctx, cfg, nil)
			if !errors.Is(err, setup.ErrUnsafeReplication) {
				t.Fatalf("err = %v, want ErrUnsafeReplication", err)
			}
			t.Logf("refused: %v", err)
			tds, err := env.KafkaAdmin(t).ListTopics(ctx, n)
			if err != nil {
				t.Fatal(err)
			}
			if tds.Has(n) {
				t.Fatalf("topic %s was created despite the refusal", n)
			}
		})
	}
}
