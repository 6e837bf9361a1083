//go:build integration

package bridge

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/iotpipe/iotpipe/internal/certs"
	"github.com/iotpipe/iotpipe/internal/demo"
	"github.com/iotpipe/iotpipe/internal/devicesim"
	"github.com/iotpipe/iotpipe/internal/service"
	"github.com/iotpipe/iotpipe/internal/testenv"
)

// BenchmarkBridgeVsPipeline measures how fast a queued load drains from
// Mosquitto through the bridge into Kafka (QoS 1, ack after Kafka), for
// each compression codec, and the same load through `mosquitto_sub -q 1 |
// kcat -P` (no guarantee: the subscriber acknowledges on receipt), in the
// same run. Each consumer has its own persistent session in its own share
// group; the fleet publishes the load once per round while they are all
// offline, then each drains its copy in turn, into a topic of its own.
//
// Warm, alternated, repeated: a warm-up round (a fifth of the load, not
// counted) runs every consumer first; then each of IOTPIPE_BENCH_REPEATS
// rounds (default 3) starts with another consumer (the order rotates), so
// that no variant is always measured first or last. Reported per consumer,
// as medians of the rounds: messages/s, CPU µs per message of the
// consuming processes (from /proc), for the bridge heap allocations per
// message (go_memstats_mallocs_total at the end of the drain, less that of
// a bridge that started and drained nothing), the spread ((max − min) /
// median of msgs/s, in %) and the number of rounds. Load:
// IOTPIPE_BENCH_MESSAGES (default 100000) from 1000 devices. Each round
// logs (-v) the bridge's time to its MQTT connection and the messages it
// received and got redelivered (DUP): Mosquitto before 2.0.13 redelivers
// messages whose PUBACK it had received (docs/brokers.md), and such a
// round moves more than the load (the offsets count the duplicates).
//
//	go test -tags integration -run '^$' -bench BridgeVsPipeline -benchtime 1x ./bridge/
func BenchmarkBridgeVsPipeline(b *testing.B) {
	n, repeats := 100_000, 3
	if v, err := strconv.Atoi(os.Getenv("IOTPIPE_BENCH_MESSAGES")); err == nil && v > 0 {
		n = v
	}
	if v, err := strconv.Atoi(os.Getenv("IOTPIPE_BENCH_REPEATS")); err == nil && v > 0 {
		repeats = v
	}
	env := testenv.Load(b)
	prefix := env.MQTTPrefix(b)
	template := prefix + "/{device_id}/telemetry"
	filter := prefix + "/+/telemetry"
	variants := []string{"lz4", "zstd", "snappy", "none"}
	type target struct {
		name, group, clientID, compression string
	}
	var targets []target
	for _, c := range variants {
		targets = append(targets, target{"bridge-" + c, testenv.Name(b, "g"), testenv.Name(b, "bridge"), c})
	}
	targets = append(targets, target{"pipeline", testenv.Name(b, "g"), testenv.Name(b, "sub"), ""})
	dlq := envTopic(b, env)
	for _, tg := range targets {
		b.Cleanup(func() { endSessionTB(b, env, tg.clientID) })
	}
	bin := testenv.Binary(b)
	kc := env.KafkaConfig(b, testenv.Bridge)
	bridgeArgs := func(tg target, topic string) []string {
		args := []string{"bridge", "--mqtt-url", env.MQTTURL, "--mqtt-client-id", tg.clientID,
			"--mqtt-username", env.MQTTUsername, "--mqtt-password", env.MQTTPassword,
			"--mqtt-share-group", tg.group, "--mqtt-session-expiry", "10m",
			"--topic-raw", topic, "--topic-dlq", dlq,
			"--topic-template", template, "--kafka-compression", tg.compression, "--log-format", "json",
			"--heartbeat-interval", "0"} // the bench counts raw records by end offsets
		args = append(args, testenv.KafkaCLIArgs(kc)...)
		// IOTPIPE_BENCH_BRIDGE_ARGS adds flags, e.g. "--mqtt-receive-maximum 4000".
		args = append(args, strings.Fields(os.Getenv("IOTPIPE_BENCH_BRIDGE_ARGS"))...)
		return args
	}
	subArgs := func(tg target, extra ...string) []string {
		host, port, _ := net.SplitHostPort(env.MQTTAddr(b))
		return append([]string{"-h", host, "-p", port, "-u", env.MQTTUsername, "-P", env.MQTTPassword, "-V", "5",
			"-q", "1", "-c", "-i", tg.clientID, "-x", "600", "-t", "$share/" + tg.group + "/" + filter}, extra...)
	}
	// 1. Create every session and subscription, then go offline. A
	// bridge's allocations per message are those of its drain less those
	// of a start that drains nothing (idleMallocs): by the time the
	// bridge has subscribed and serves its metrics, much of the queue may
	// be drained already.
	idleMallocs := map[string]float64{}
	for _, tg := range targets {
		if tg.name == "pipeline" {
			if out, err := exec.Command("mosquitto_sub", subArgs(tg, "-E")...).CombinedOutput(); err != nil {
				b.Fatalf("mosquitto_sub -E: %v %s", err, out)
			}
			continue
		}
		addr := freeAddr(b)
		p := startBench(b, bin, append(bridgeArgs(tg, envTopic(b, env)), "--http-addr", addr))
		idleMallocs[tg.name] = metric(b, addr, "go_memstats_mallocs_total")
		p.Stop(time.Minute)
	}
	// publish publishes a load of size messages once: every session queues
	// a copy. It returns how many the broker acknowledged.
	publish := func(size int) int {
		sim, err := devicesim.New(func() devicesim.Config {
			c := devicesim.DefaultConfig()
			c.URL = env.MQTTURL
			c.Username = env.MQTTUsername
			c.Password = env.MQTTPassword
			c.Devices = 1000
			c.MessagesPerDevice = max(size/1000, 1)
			c.TopicTemplate = template
			c.Rate = 0
			c.ValidKinds = devicesim.AllValidKinds()
			return c
		}(), service.Deps{})
		if err != nil {
			b.Fatal(err)
		}
		pubStart := time.Now()
		var ru0, ru1 syscall.Rusage
		_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
		if err := sim.Run(testenv.Context(b, 10*time.Minute)); err != nil {
			b.Fatal(err)
		}
		_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
		st := sim.Stats()
		simCPU := time.Duration(ru1.Utime.Nano()+ru1.Stime.Nano()-ru0.Utime.Nano()-ru0.Stime.Nano()) * time.Nanosecond
		b.Logf("fleet published %d QoS 1 messages in %s (%.0f msg/s), devicesim CPU %.2f µs/msg", st.Acked, time.Since(pubStart).Round(time.Millisecond),
			float64(st.Acked)/time.Since(pubStart).Seconds(), float64(simCPU.Microseconds())/float64(st.Acked))
		return int(st.Acked)
	}
	adm := env.KafkaAdmin(b)
	type figures struct {
		rate, cpu, allocs float64
		startup           time.Duration // the bridge's, from its start to its MQTT connection
		// the bridge's messages received (redeliveries included) and
		// redelivered (DUP) during the drain
		received, redelivered float64
	}
	// drain runs one consumer until its copy of the load (total messages)
	// is in Kafka.
	drain := func(tg target, total int) figures {
		topic := envTopic(b, env)
		start := time.Now()
		var cpu func() time.Duration
		var mallocs func() float64
		var stop func()
		var startup func() time.Duration
		var addrOf string
		if tg.name == "pipeline" {
			// -C: exit after the load, so that its buffered stdout
			// reaches kcat.
			sub := exec.Command("mosquitto_sub", subArgs(tg, "-C", strconv.Itoa(total))...)
			kc := exec.Command("kcat", append(append([]string{"-P"}, testenv.KCatArgs(env.KafkaPlainAdmin(b))...), "-t", topic,
				"-z", "lz4", "-X", "linger.ms=5", "-X", "acks=all")...)
			pipe, err := sub.StdoutPipe()
			if err != nil {
				b.Fatal(err)
			}
			kc.Stdin = pipe
			if err := kc.Start(); err != nil {
				b.Fatal(err)
			}
			if err := sub.Start(); err != nil {
				b.Fatal(err)
			}
			cpu = func() time.Duration { return procCPU(b, sub.Process.Pid) + procCPU(b, kc.Process.Pid) }
			stop = func() {
				_ = sub.Process.Signal(syscall.SIGTERM)
				_ = sub.Wait()
				_ = kc.Wait()
			}
		} else {
			addr := freeAddr(b)
			addrOf = addr
			p := startBench(b, bin, append(bridgeArgs(tg, topic), "--http-addr", addr))
			cpu = func() time.Duration { return procCPU(b, p.Pid()) }
			mallocs = func() float64 { return metric(b, addr, "go_memstats_mallocs_total") - idleMallocs[tg.name] }
			startup = func() time.Duration { return connectedAt(b, p.LogPath()).Sub(start) }
			stop = func() { p.Stop(time.Minute) }
		}
		waitOffsets(b, adm, topic, total)
		el := time.Since(start)
		f := figures{rate: float64(total) / el.Seconds(), cpu: float64(cpu().Microseconds()) / float64(total)}
		if mallocs != nil {
			f.allocs = mallocs() / float64(total)
		}
		if startup != nil {
			f.startup = startup()
			f.received = metric(b, addrOf, "iotpipe_bridge_received_total")
			f.redelivered = metric(b, addrOf, "iotpipe_bridge_redelivered_total")
		}
		stop()
		return f
	}

	// 2. Warm-up: every consumer drains a small load once (not counted).
	warm := publish(max(n/5, 1000))
	for _, tg := range targets {
		f := drain(tg, warm)
		b.Logf("warm-up: %s drained %d (%.0f msg/s)", tg.name, warm, f.rate)
	}
	// 3. The measured rounds, each starting with another consumer.
	got := map[string][]figures{}
	b.ResetTimer()
	for r := range repeats {
		total := publish(n)
		for i := range targets {
			tg := targets[(r+i)%len(targets)]
			f := drain(tg, total)
			got[tg.name] = append(got[tg.name], f)
			b.Logf("round %d, %d of %d: %s drained %d at %.0f msg/s, %.2f CPU µs/msg, %.1f allocs/msg (bridge: MQTT connection %s after its start, %.0f received, %.0f redelivered)",
				r+1, i+1, len(targets), tg.name, total, f.rate, f.cpu, f.allocs, f.startup.Round(time.Millisecond), f.received, f.redelivered)
		}
	}
	meds := map[string]float64{}
	for _, tg := range targets {
		var rates, cpus, allocs []float64
		for _, f := range got[tg.name] {
			rates, cpus, allocs = append(rates, f.rate), append(cpus, f.cpu), append(allocs, f.allocs)
		}
		meds[tg.name] = median(rates)
		b.Run(tg.name, func(b *testing.B) {
			b.ReportMetric(median(rates), "msgs/s")
			b.ReportMetric(median(cpus), "cpu-µs/msg")
			if tg.name != "pipeline" {
				b.ReportMetric(median(allocs), "allocs/msg")
			}
			b.ReportMetric(100*(slices.Max(rates)-slices.Min(rates))/median(rates), "spread-%")
			b.ReportMetric(float64(len(rates)), "rounds")
			b.ReportMetric(0, "ns/op")
		})
	}
	if p := meds["pipeline"]; p > 0 {
		for _, c := range variants {
			b.Logf("bridge (%s) / pipeline throughput, medians of %d warm rounds: %.2f (%.0f vs %.0f msg/s)", c, repeats, meds["bridge-"+c]/p, meds["bridge-"+c], p)
		}
	}
}

func envTopic(b *testing.B, env *testenv.Env) string { return env.Topic(b, 6, nil) }

func endSessionTB(b *testing.B, env *testenv.Env, clientID string) {
	host, port, _ := net.SplitHostPort(env.MQTTAddr(b))
	_ = exec.Command("mosquitto_sub", "-h", host, "-p", port, "-u", env.MQTTUsername, "-P", env.MQTTPassword,
		"-V", "5", "-i", clientID, "-t", "x/never", "-E").Run()
}

// startBench starts the bridge binary bin with args (flags only) and
// waits until it has subscribed.
func startBench(b *testing.B, bin string, args []string) *testenv.Proc {
	p := testenv.StartProcPath(b, bin, "bridge", nil, args...)
	p.WaitLine(`"mqtt subscribed"`, time.Minute)
	return p
}

// procCPU is the user+system CPU time of a process.
func procCPU(b *testing.B, pid int) time.Duration {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	stt, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+stt) * (time.Second / 100)
}

func freeAddr(b *testing.B) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func metric(b *testing.B, addr, name string) float64 {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	m, err := demo.Parse(resp.Body)
	if err != nil {
		b.Fatal(err)
	}
	if !m.Has(name) {
		b.Fatalf("metric %s not found", name)
	}
	return m.Sum(name)
}

func waitOffsets(b *testing.B, adm *kadm.Client, topic string, want int) {
	deadline := time.Now().Add(5 * time.Minute)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		offs, err := adm.ListEndOffsets(ctx, topic)
		cancel()
		if err == nil {
			sum := int64(0)
			offs.Each(func(o kadm.ListedOffset) { sum += o.Offset })
			if sum >= int64(want) {
				return
			}
		}
		if time.Now().After(deadline) {
			b.Fatalf("topic %s: fewer than %d records after 5 minutes", topic, want)
		}
		time.Sleep(10 * time.Millisecond) // polling interval, not synchronisation
	}
}

// BenchmarkBridgeDrain drains a queued load through a bridge running in
// this process, so that profiles show where the bridge's time and
// allocations go (the fleet publishes before the timer starts, while the
// bridge is offline). -cpuprofile and -memprofile include the publishing
// fleet; for the drain alone set IOTPIPE_BENCH_CPUPROFILE to a file
// (a CPU profile of the drain only) and IOTPIPE_BENCH_MEMPROFILE to a
// file prefix (<prefix>.before and <prefix>.after, heap profiles taken
// around the drain: `go tool pprof -sample_index=alloc_objects -base
// <prefix>.before <prefix>.after` shows what the drain allocated).
//
//	IOTPIPE_BENCH_CPUPROFILE=/tmp/cpu.out go test -tags integration -run '^$' -bench '^BenchmarkBridgeDrain$' -benchtime 1x ./bridge/
//	go tool pprof -top /tmp/cpu.out
func BenchmarkBridgeDrain(b *testing.B) { benchDrain(b, testenv.Load(b)) }

// BenchmarkBridgeDrainKafkaSec measures what SASL_SSL costs the bridge:
// BenchmarkBridgeDrain's drain over the SASL_SSL listener (SCRAM-SHA-512,
// TLS) and over a PLAINTEXT listener of the same private broker
// (testenv.StartKafkaSecBench: one JVM, one page cache, the same ACLs),
// from the same Mosquitto, so that nothing but the Kafka client transport
// differs. Each variant has its own persistent session and share group;
// every round the fleet publishes the load once while both bridges are
// offline (each session queues a copy), then each drains its copy into a
// topic of its own round, in turn. Warm, interleaved, repeated: a warm-up
// round (a fifth of the load, not counted) first, then
// IOTPIPE_BENCH_REPEATS rounds (default and minimum 3), the order
// alternating (SASL_SSL, PLAINTEXT, PLAINTEXT, SASL_SSL, ...). Reported per
// listener (sub-benchmarks sasl_ssl and plaintext): the median msgs/s
// (from the bridge's start until every record is in Kafka) and
// cpu-µs/msg (this process, which runs nothing else meanwhile) of the
// rounds, their spread ((max − min) / median of msgs/s, in %) and the
// number of rounds; the cost is 1 − sasl_ssl / plaintext msgs/s
// (bench/result). Load: IOTPIPE_BENCH_MESSAGES (default 100000) from 1000
// devices.
//
//	go test -tags integration -run '^$' -bench '^BenchmarkBridgeDrainKafkaSec$' -benchtime 1x ./bridge/
func BenchmarkBridgeDrainKafkaSec(b *testing.B) {
	n, rounds := 100_000, 3
	if v, err := strconv.Atoi(os.Getenv("IOTPIPE_BENCH_MESSAGES")); err == nil && v > 0 {
		n = v
	}
	if v, err := strconv.Atoi(os.Getenv("IOTPIPE_BENCH_REPEATS")); err == nil && v > rounds {
		rounds = v
	}
	sasl, plain := testenv.StartKafkaSecBench(b)
	prefix := sasl.MQTTPrefix(b)
	template := prefix + "/{device_id}/telemetry"
	dlq := envTopic(b, sasl)
	type variant struct {
		name string
		cfg  Config
	}
	var variants []*variant
	for _, v := range []struct {
		name string
		env  *testenv.Env
	}{{"sasl_ssl", sasl}, {"plaintext", plain}} {
		clientID := testenv.Name(b, "bridge")
		b.Cleanup(func() { endSessionTB(b, sasl, clientID) })
		cfg := DefaultConfig()
		cfg.MQTT.URLs, cfg.MQTT.ClientID = []string{sasl.MQTTURL}, clientID
		cfg.MQTT.Username, cfg.MQTT.Password = sasl.MQTTUsername, sasl.MQTTPassword
		cfg.MQTT.ShareGroup, cfg.MQTT.SessionExpiry = testenv.Name(b, "share"), 10*time.Minute
		cfg.Kafka = v.env.KafkaConfig(b, testenv.Bridge)
		cfg.TopicDLQ, cfg.TopicTemplate = dlq, template
		variants = append(variants, &variant{v.name, cfg})
	}
	adm := sasl.KafkaAdmin(b)
	// drain runs v's bridge into a new topic until it holds want records.
	drain := func(v *variant, want int) (msgsPerS, cpuPerMsg float64) {
		cfg := v.cfg
		cfg.TopicRaw = envTopic(b, sasl)
		br, err := New(cfg, service.Deps{})
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		start, cpu0 := time.Now(), processCPU()
		go func() { done <- br.Run(ctx) }()
		if want > 0 {
			waitOffsets(b, adm, cfg.TopicRaw, want)
		} else {
			for br.MQTTReady(ctx) != nil {
				time.Sleep(10 * time.Millisecond) // polling for readiness
			}
		}
		el, cpu := time.Since(start), processCPU()-cpu0
		cancel()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
		_, _ = adm.DeleteTopics(testenv.Context(b, time.Minute), cfg.TopicRaw)
		if want == 0 {
			return 0, 0
		}
		return float64(want) / el.Seconds(), float64(cpu.Microseconds()) / float64(want)
	}
	publish := func(msgs int) int {
		sim, err := devicesim.New(func() devicesim.Config {
			c := devicesim.DefaultConfig()
			c.URL, c.Username, c.Password = sasl.MQTTURL, sasl.MQTTUsername, sasl.MQTTPassword
			c.Devices, c.MessagesPerDevice = 1000, max(msgs/1000, 1)
			c.TopicTemplate, c.Rate, c.ProgressInterval = template, 0, 0
			c.ValidKinds = devicesim.AllValidKinds()
			return c
		}(), service.Deps{})
		if err != nil {
			b.Fatal(err)
		}
		if err := sim.Run(testenv.Context(b, 10*time.Minute)); err != nil {
			b.Fatal(err)
		}
		if st := sim.Stats(); st.Refused > 0 || st.NoSubscribers > 0 || st.Acked == 0 {
			b.Fatalf("publisher: acked %d, refused %d, no subscribers %d", st.Acked, st.Refused, st.NoSubscribers)
		}
		return int(sim.Stats().Acked)
	}
	// Sessions and subscriptions first (then offline), and the warm-up.
	for _, v := range variants {
		drain(v, 0)
	}
	acked := publish(n / 5)
	for _, v := range variants {
		r, c := drain(v, acked)
		b.Logf("warm-up over %s (not counted): %d msgs, %.0f msgs/s, %.2f cpu-µs/msg", v.name, acked, r, c)
	}
	rates, cpus := map[string][]float64{}, map[string][]float64{}
	b.ResetTimer()
	for i := range rounds {
		acked := publish(n)
		order := variants
		if i%2 == 1 {
			order = []*variant{variants[1], variants[0]}
		}
		for _, v := range order {
			r, c := drain(v, acked)
			rates[v.name] = append(rates[v.name], r)
			cpus[v.name] = append(cpus[v.name], c)
			b.Logf("round %d over %s: %d msgs, %.0f msgs/s, %.2f cpu-µs/msg", i+1, v.name, acked, r, c)
		}
	}
	b.StopTimer()
	// The ratio of each round's pair (both listeners, back to back), whose
	// median a drift of the machine's load disturbs least.
	var pairs []float64
	for i := range rates["sasl_ssl"] {
		pairs = append(pairs, rates["sasl_ssl"][i]/rates["plaintext"][i])
	}
	for _, v := range variants {
		b.Run(v.name, func(b *testing.B) {
			if v.name == "sasl_ssl" {
				b.ReportMetric(median(pairs), "paired-ratio")
			}
			b.ReportMetric(median(rates[v.name]), "msgs/s")
			b.ReportMetric(median(cpus[v.name]), "cpu-µs/msg")
			b.ReportMetric(spread(rates[v.name]), "spread-%")
			b.ReportMetric(float64(len(rates[v.name])), "rounds")
			b.ReportMetric(0, "ns/op")
		})
	}
	s, p := median(rates["sasl_ssl"]), median(rates["plaintext"])
	b.Logf("bridge over SASL_SSL / PLAINTEXT: %.3f (median of the rounds' ratios %.3f; %.0f vs %.0f msgs/s, medians of %d rounds; spread %.1f %% vs %.1f %%; cpu-µs/msg %.2f vs %.2f): SASL_SSL costs %.1f %%",
		s/p, median(pairs), s, p, rounds, spread(rates["sasl_ssl"]), spread(rates["plaintext"]), median(cpus["sasl_ssl"]), median(cpus["plaintext"]), 100*(1-s/p))
}

// processCPU is the user+system CPU time of this process.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func benchDrain(b *testing.B, env *testenv.Env) {
	n := 100_000
	if v, err := strconv.Atoi(os.Getenv("IOTPIPE_BENCH_MESSAGES")); err == nil && v > 0 {
		n = v
	}
	s := &setup{env: env, prefix: env.MQTTPrefix(b), raw: env.Topic(b, 6, nil), dlq: env.Topic(b, 2, nil), group: testenv.Name(b, "share")}
	clientID := testenv.Name(b, "bridge")
	b.Cleanup(func() { endSessionTB(b, env, clientID) })
	cfg := DefaultConfig()
	cfg.MQTT.URLs, cfg.MQTT.ClientID = []string{env.MQTTURL}, clientID
	cfg.MQTT.Username, cfg.MQTT.Password = env.MQTTUsername, env.MQTTPassword
	cfg.MQTT.ShareGroup, cfg.MQTT.SessionExpiry = s.group, 10*time.Minute
	cfg.Kafka = env.KafkaConfig(b, testenv.Bridge)
	cfg.TopicRaw, cfg.TopicDLQ, cfg.TopicTemplate = s.raw, s.dlq, s.template()
	cfg.HeartbeatInterval = 0 // the bench counts raw records by end offsets
	run := func() (*Bridge, context.CancelFunc, chan error) {
		br, err := New(cfg, service.Deps{})
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- br.Run(ctx) }()
		for br.MQTTReady(ctx) != nil {
			time.Sleep(10 * time.Millisecond) // polling for readiness
		}
		return br, cancel, done
	}
	_, cancel, done := run()
	cancel()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	sim, err := devicesim.New(func() devicesim.Config {
		c := devicesim.DefaultConfig()
		c.URL = env.MQTTURL
		c.Username = env.MQTTUsername
		c.Password = env.MQTTPassword
		c.Devices = 1000
		c.MessagesPerDevice = n / 1000
		c.TopicTemplate = s.template()
		c.Rate = 0
		c.ValidKinds = devicesim.AllValidKinds()
		return c
	}(), service.Deps{})
	if err != nil {
		b.Fatal(err)
	}
	if err := sim.Run(testenv.Context(b, 10*time.Minute)); err != nil {
		b.Fatal(err)
	}
	adm := env.KafkaAdmin(b)
	stopProfiles := startDrainProfiles(b)
	b.ReportAllocs()
	b.ResetTimer()
	start, cpu0 := time.Now(), processCPU()
	br, cancel, done := run()
	waitOffsets(b, adm, s.raw, int(sim.Stats().Acked))
	el, cpu := time.Since(start), processCPU()-cpu0
	b.StopTimer()
	stopProfiles()
	// The mean time from receiving a message to Kafka's acknowledgement:
	// with the in-flight limit, it bounds the rate (limit / latency).
	var lat dto.Metric
	if err := br.m.produceLatency.Write(&lat); err == nil && lat.GetHistogram().GetSampleCount() > 0 {
		h := lat.GetHistogram()
		b.ReportMetric(1000*h.GetSampleSum()/float64(h.GetSampleCount()), "produce-ms")
	}
	cancel()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(sim.Stats().Acked)/el.Seconds(), "msgs/s")
	// This process runs nothing but the bridge (and the offset polling)
	// during the drain.
	b.ReportMetric(float64(cpu.Microseconds())/float64(sim.Stats().Acked), "cpu-µs/msg")
}

// startDrainProfiles starts the profiles IOTPIPE_BENCH_CPUPROFILE and
// IOTPIPE_BENCH_MEMPROFILE ask for (see BenchmarkBridgeDrain); the
// returned function ends them.
func startDrainProfiles(b *testing.B) (stop func()) {
	cpuPath, memPrefix := os.Getenv("IOTPIPE_BENCH_CPUPROFILE"), os.Getenv("IOTPIPE_BENCH_MEMPROFILE")
	writeHeap := func(path string) {
		runtime.GC() // the heap profile is as of the last GC
		f, err := os.Create(path)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
			b.Fatal(err)
		}
	}
	if memPrefix != "" {
		writeHeap(memPrefix + ".before")
	}
	var cpu *os.File
	if cpuPath != "" {
		f, err := os.Create(cpuPath)
		if err != nil {
			b.Fatal(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			b.Fatal(err)
		}
		cpu = f
	}
	return func() {
		if cpu != nil {
			pprof.StopCPUProfile()
			_ = cpu.Close()
			b.Logf("CPU profile of the drain: %s", cpuPath)
		}
		if memPrefix != "" {
			writeHeap(memPrefix + ".after")
			b.Logf("heap profiles around the drain: %s.before, %s.after", memPrefix, memPrefix)
		}
	}
}

// BenchmarkBridgeTLS measures what mutual TLS costs: the bridge draining a
// queued load over the broker's TLS listener (its own certificate, CN
// iotpipe-bridge) and over the plaintext listener, in the same run,
// interleaved: each of IOTPIPE_BENCH_REPEATS rounds (default 3) publishes
// the load once (IOTPIPE_BENCH_MESSAGES, default 100000, from 100 devices,
// one connection each) while both bridges are offline, each in its own
// persistent session and share group, then drains each copy in turn,
// alternating which goes first. The publisher alternates too: over TLS,
// every device with its own certificate (CN = device id, so the broker's
// ACL applies as in production), and over plaintext with the device
// password user. Reported, as medians of the rounds: the bridge's
// messages/s from its start (msgs/s, as BenchmarkBridgeVsPipeline) and
// from its MQTT connection, once up and past the TLS handshake
// (drain-msgs/s), and its CPU µs per message (from /proc) per transport, and the
// simulator's CPU µs per published message per transport (getrusage of
// this process, which runs nothing else while it publishes).
//
//	go test -tags integration -run '^$' -bench BridgeTLS -benchtime 1x ./bridge/
func BenchmarkBridgeTLS(b *testing.B) {
	n, repeats := 100_000, 3
	if v, err := strconv.Atoi(os.Getenv("IOTPIPE_BENCH_MESSAGES")); err == nil && v > 0 {
		n = v
	}
	if v, err := strconv.Atoi(os.Getenv("IOTPIPE_BENCH_REPEATS")); err == nil && v > 0 {
		repeats = v
	}
	const devices = 100
	env := testenv.Load(b)
	// A private Mosquitto (this checkout's configuration and ACL) for both
	// transports: the ACL lets a device publish only devices/<CN>/telemetry,
	// so a run cannot keep other runs' messages out with a topic level of
	// its own on the shared broker. Kafka is the shared one.
	priv := testenv.StartPrivate(b, "mqtt")
	tlsEnv, mq := priv.MQTTTLS(b), priv.Env
	id := testenv.Name(b, "tls")
	devicePrefix := id + "-"
	template := "devices/{device_id}/telemetry"
	certDir := b.TempDir()
	ca, err := certs.Load(tlsEnv.CADir)
	if err != nil {
		b.Fatal(err)
	}
	for i := range devices {
		did := devicesim.DeviceID(devicePrefix, i)
		key, err := certs.NewKey()
		if err != nil {
			b.Fatal(err)
		}
		iss, err := ca.IssueClient(did, &key.PublicKey, time.Hour)
		if err != nil {
			b.Fatal(err)
		}
		if _, _, err := certs.WriteKeyPair(certDir, did, iss.PEM, key); err != nil {
			b.Fatal(err)
		}
	}
	type target struct {
		name, group, clientID, topic string
		conn                         []string
	}
	targets := []*target{
		{name: "plaintext", conn: []string{"--mqtt-url", mq.MQTTURL, "--mqtt-username", mq.MQTTUsername, "--mqtt-password", mq.MQTTPassword}},
		{name: "tls", conn: []string{"--mqtt-url", tlsEnv.URL, "--mqtt-ca-file", tlsEnv.CAFile,
			"--mqtt-cert-file", tlsEnv.BridgeCertFile, "--mqtt-key-file", tlsEnv.BridgeKeyFile}},
	}
	dlq := envTopic(b, env)
	for _, tg := range targets {
		tg.group, tg.clientID, tg.topic = testenv.Name(b, "g"), testenv.Name(b, "bridge"), envTopic(b, env)
		b.Cleanup(func() { endSessionTB(b, mq, tg.clientID) })
	}
	bin := testenv.Binary(b)
	kafkaArgs := testenv.KafkaCLIArgs(env.KafkaConfig(b, testenv.Bridge))
	bridgeArgs := func(tg *target) []string {
		return append(append(append([]string{"bridge", "--mqtt-client-id", tg.clientID, "--mqtt-share-group", tg.group, "--mqtt-session-expiry", "10m",
			"--mqtt-catch-all=false", "--topic-raw", tg.topic, "--topic-dlq", dlq,
			"--topic-template", template, "--log-format", "json",
			"--heartbeat-interval", "0"}, tg.conn...), kafkaArgs...), strings.Fields(os.Getenv("IOTPIPE_BENCH_BRIDGE_ARGS"))...)
	}
	// Sessions and subscriptions first, then offline.
	for _, tg := range targets {
		startBench(b, bin, append(bridgeArgs(tg), "--http-addr", "")).Stop(time.Minute)
	}
	publish := func(overTLS bool) (acked int64, cpuPerMsg float64) {
		c := devicesim.DefaultConfig()
		c.Devices, c.DevicesPerConn, c.DeviceIDPrefix = devices, 1, devicePrefix
		c.MessagesPerDevice, c.Rate, c.TopicTemplate = n/devices, 0, template
		c.ValidKinds, c.ProgressInterval = devicesim.AllValidKinds(), 0
		if overTLS {
			c.URL, c.CAFile, c.CertDir = tlsEnv.URL, tlsEnv.CAFile, certDir
		} else {
			c.URL, c.Username, c.Password = mq.MQTTURL, mq.MQTTDeviceUsername, mq.MQTTDevicePassword
		}
		sim, err := devicesim.New(c, service.Deps{})
		if err != nil {
			b.Fatal(err)
		}
		var ru0, ru1 syscall.Rusage
		_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
		if err := sim.Run(testenv.Context(b, 10*time.Minute)); err != nil {
			b.Fatal(err)
		}
		_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
		st := sim.Stats()
		if st.Refused > 0 || st.NoSubscribers > 0 || st.Acked == 0 {
			b.Fatalf("publisher (tls %t): acked %d, refused %d, no subscribers %d", overTLS, st.Acked, st.Refused, st.NoSubscribers)
		}
		cpu := time.Duration(ru1.Utime.Nano() + ru1.Stime.Nano() - ru0.Utime.Nano() - ru0.Stime.Nano())
		return st.Acked, float64(cpu.Nanoseconds()) / 1e3 / float64(st.Acked)
	}
	adm := env.KafkaAdmin(b)
	rates, drains, cpus, simCPU := map[string][]float64{}, map[string][]float64{}, map[string][]float64{}, map[string][]float64{}
	total := 0
	b.ResetTimer()
	for r := range repeats {
		overTLS := r%2 == 0
		acked, simPer := publish(overTLS)
		simName := map[bool]string{true: "tls", false: "plaintext"}[overTLS]
		simCPU[simName] = append(simCPU[simName], simPer)
		total += int(acked)
		order := []*target{targets[0], targets[1]}
		if r%2 == 1 {
			order[0], order[1] = order[1], order[0]
		}
		for _, tg := range order {
			addr := freeAddr(b)
			start := time.Now()
			p := startBench(b, bin, append(bridgeArgs(tg), "--http-addr", addr))
			waitOffsets(b, adm, tg.topic, total)
			end := time.Now()
			el := end.Sub(start)
			c := procCPU(b, p.Pid())
			p.Stop(time.Minute)
			drain := end.Sub(connectedAt(b, p.LogPath()))
			rates[tg.name] = append(rates[tg.name], float64(acked)/el.Seconds())
			drains[tg.name] = append(drains[tg.name], float64(acked)/drain.Seconds())
			cpus[tg.name] = append(cpus[tg.name], float64(c.Microseconds())/float64(acked))
			b.Logf("round %d (publisher over %s): bridge over %s drained %d in %s from its start, %s from its MQTT connection (%.0f, %.0f msg/s; %.2f CPU µs/msg)",
				r+1, simName, tg.name, acked, el.Round(time.Millisecond), drain.Round(time.Millisecond), float64(acked)/el.Seconds(),
				float64(acked)/drain.Seconds(), float64(c.Microseconds())/float64(acked))
		}
	}
	b.StopTimer()
	for _, tg := range targets {
		b.Run(tg.name, func(b *testing.B) {
			b.ReportMetric(median(rates[tg.name]), "msgs/s")
			b.ReportMetric(median(drains[tg.name]), "drain-msgs/s")
			b.ReportMetric(median(cpus[tg.name]), "cpu-µs/msg")
			b.ReportMetric(float64(len(rates[tg.name])), "rounds")
			b.ReportMetric(0, "ns/op")
		})
	}
	for _, name := range []string{"plaintext", "tls"} {
		if len(simCPU[name]) == 0 {
			continue
		}
		b.Run("simulator-"+name, func(b *testing.B) {
			b.ReportMetric(median(simCPU[name]), "cpu-µs/msg")
			b.ReportMetric(float64(len(simCPU[name])), "rounds")
			b.ReportMetric(0, "ns/op")
		})
	}
	if p := median(rates["plaintext"]); p > 0 {
		b.Logf("bridge over TLS / plaintext throughput: %.3f from the bridge's start (%.0f vs %.0f msg/s), %.3f from its MQTT connection (%.0f vs %.0f msg/s), medians of %d rounds; CPU µs/msg %.2f vs %.2f",
			median(rates["tls"])/p, median(rates["tls"]), p, median(drains["tls"])/median(drains["plaintext"]), median(drains["tls"]), median(drains["plaintext"]),
			repeats, median(cpus["tls"]), median(cpus["plaintext"]))
	}
}

// connectedAt is the time of the bridge's first "mqtt connected" log line
// (JSON): where its drain starts once the process is up and the TLS
// handshake done.
func connectedAt(b *testing.B, logPath string) time.Time {
	raw, err := os.ReadFile(logPath)
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if !strings.Contains(line, `"msg":"mqtt connected"`) {
			continue
		}
		var l struct {
			Time time.Time `json:"time"`
		}
		if err := json.Unmarshal([]byte(line), &l); err != nil || l.Time.IsZero() {
			b.Fatalf("bridge log line %q: %v", line, err)
		}
		return l.Time
	}
	b.Fatalf("no \"mqtt connected\" line in %s", logPath)
	return time.Time{}
}

// spread is (max − min) / median of xs, in percent.
func spread(xs []float64) float64 {
	m := median(xs)
	if m == 0 {
		return 0
	}
	return 100 * (slices.Max(xs) - slices.Min(xs)) / m
}

// median of xs (0 for none).
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
