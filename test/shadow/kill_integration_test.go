//go:build integration

package shadow_test

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/iotpipe/iotpipe/internal/certs"
	"github.com/iotpipe/iotpipe/internal/registrytest"
	"github.com/iotpipe/iotpipe/internal/testenv"
	"github.com/iotpipe/iotpipe/registry"
)

// Acceptance: SIGKILL the shadow consumer under load, three times; every
// report is applied exactly once. Each of the n reports changes the
// reported counter, so the shadow ends at version n with counter n and n
// accepted answers in the outbox (the relay is not running): a report
// applied twice would move the version further and add an answer.
func TestShadowConsumerKilledUnderLoad(t *testing.T) {
	env := testenv.Load(t)
	schema, dsn := registrytest.Schema(t, env)
	ctx := testenv.Context(t, 5*time.Minute)
	reg, err := registry.Open(ctx, dsn, schema)
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	ca, _ := certs.New("", time.Hour)
	const devices, n = 4, 1500 // reports per device
	ids := make([]string, devices)
	for i := range ids {
		ids[i] = fmt.Sprintf("load-%d", i)
		k, _ := certs.NewKey()
		iss, _ := ca.IssueClient(ids[i], &k.PublicKey, time.Hour)
		if err := reg.Add(ctx, registry.NewDevice{ID: ids[i], Cert: iss.Cert}); err != nil {
			t.Fatal(err)
		}
	}
	topic := env.Topic(t, 3, nil)
	// The records the bridge writes for devices/<id>/shadow/update.
	cl := env.Kafka(t, kgo.DefaultProduceTopic(topic))
	var recs []*kgo.Record
	for i := 1; i <= n; i++ {
		for _, id := range ids {
			recs = append(recs, &kgo.Record{Key: []byte(id), Value: []byte(`{"state":{"reported":{"counter":` + strconv.Itoa(i) + `}}}`),
				Headers: []kgo.RecordHeader{{Key: "mqtt-topic", Value: []byte("devices/" + id + "/shadow/update")}, {Key: "shadow-kind", Value: []byte("update")}}})
		}
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	applied := func() int64 {
		var v int64
		_ = pool.QueryRow(ctx, "SELECT coalesce(sum(version), 0) FROM "+schema+".device_shadows").Scan(&v)
		return v
	}
	penv := append(env.Environ(), "IOTPIPE_PG_REGISTRY_DSN="+dsn, "IOTPIPE_PG_SCHEMA="+schema, "IOTPIPE_TOPIC_SHADOW="+topic,
		"IOTPIPE_GROUP="+env.Group(t), "IOTPIPE_INSTANCE_ID=", "IOTPIPE_HTTP_ADDR=127.0.0.1:0", "IOTPIPE_BATCH_MAX=50", "IOTPIPE_LOG_FORMAT=text")
	total := int64(devices * n)
	for kill := 1; kill <= 3; kill++ {
		p := testenv.StartProc(t, "shadow-consumer", penv, "shadow-consumer")
		before := applied()
		testenv.Eventually(t, 2*time.Minute, 5*time.Millisecond, func() error {
			if a := applied(); a < before+total/8 {
				return fmt.Errorf("applied %d, waiting for progress past %d", a, before+total/8)
			}
			return nil
		})
		p.KillWait(10 * time.Second)
		t.Logf("SIGKILL %d after %d of %d reports", kill, applied(), total)
	}
	p := testenv.StartProc(t, "shadow-consumer", penv, "shadow-consumer")
	testenv.Eventually(t, 3*time.Minute, 50*time.Millisecond, func() error {
		if a := applied(); a < total {
			return fmt.Errorf("applied %d of %d", a, total)
		}
		return nil
	})
	p.StopClean(30 * time.Second)
	rows, err := pool.Query(ctx, "SELECT device_id, version, reported->>'counter' FROM "+schema+".device_shadows ORDER BY device_id")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id, counter string
		var v int64
		if err := rows.Scan(&id, &v, &counter); err != nil {
			t.Fatal(err)
		}
		if v != n || counter != strconv.Itoa(n) {
			t.Errorf("%s: version %d, counter %s; want %d and %d (each report once)", id, v, counter, n, n)
		}
	}
	var answers int64
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM "+schema+".shadow_outbox WHERE topic LIKE '%/shadow/update/accepted'").Scan(&answers); err != nil {
		t.Fatal(err)
	}
	if answers != total {
		t.Errorf("%d accepted answers in the outbox, want %d", answers, total)
	}
}
