package main

// The demo's two-way part (with --mqtt-tls): iotpipe api (HTTPS with a
// certificate of the CA, its relay as iotpipe-api), the shadow consumer,
// the bridge's shadow route, and a few devices that follow their shadow:
// they apply the delta and report back. The demo prints a ready-to-paste
// curl that changes one device's configuration.

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/iotpipe/iotpipe/api"
	"github.com/iotpipe/iotpipe/internal/certs"
	"github.com/iotpipe/iotpipe/internal/devicesim"
)

// demoShadowTopic is the Kafka topic of the devices' shadow requests.
const demoShadowTopic = "devices.shadow"

// demoFollowers is how many simulated devices follow their shadow.
const demoFollowers = 3

// startShadow starts the API and the shadow consumer and the followers
// (stopped when ctx ends, waited for through wg) and prints the curl.
func (d *demoRun) startShadow(ctx context.Context, wg *sync.WaitGroup, certDir string) error {
	o, w := d.o, d.env.Stdout
	ca, err := certs.Load(o.tls.caDir)
	if err != nil {
		return fmt.Errorf("the demo's API certificates: %w", err)
	}
	dir := filepath.Join(d.dir, "api")
	siss, skey, err := ca.IssueServer([]string{"localhost"}, []net.IP{net.ParseIP("127.0.0.1")}, 30*24*time.Hour)
	if err != nil {
		return err
	}
	srvCrt, srvKey, err := certs.WriteKeyPair(dir, "server", certs.EncodeCert(siss.Cert.Raw), skey)
	if err != nil {
		return err
	}
	aiss, akey, err := ca.IssueClientKey("iotpipe-api", 30*24*time.Hour)
	if err != nil {
		return err
	}
	apiCrt, apiKey, err := certs.WriteKeyPair(dir, "iotpipe-api", certs.EncodeCert(aiss.Cert.Raw), akey)
	if err != nil {
		return err
	}
	pool, err := pgxpool.New(ctx, o.tls.registryDSN)
	if err != nil {
		return fmt.Errorf("the demo's API token: %w", err)
	}
	token, _, err := api.NewTokens(pool, o.pgSchema).Create(ctx, "iotpipe demo", api.RoleOperator, 24*time.Hour)
	pool.Close()
	if err != nil {
		return fmt.Errorf("the demo's API token: %w", err)
	}
	gp := o.groupPrefix
	if _, err := d.start("shadow-consumer", "shadow-consumer", "--http-port-offset", "0", "--http-addr", "127.0.0.1:0",
		"--group", gp+"-shadow", "--instance-id", gp+"-shadow-1", "--topic-shadow", demoShadowTopic, "--pg-schema", o.pgSchema,
		"--pg-registry-dsn", o.tls.registryDSN); err != nil {
		return err
	}
	if _, err := d.start("api", "api", "--http-port-offset", "0", "--http-addr", "127.0.0.1:0", "--listen", o.apiListen,
		"--tls-cert-file", srvCrt, "--tls-key-file", srvKey, "--ca-dir", o.tls.caDir, "--pg-schema", o.pgSchema,
		"--pg-registry-dsn", o.tls.registryDSN, "--mqtt-url", o.tls.url, "--mqtt-ca-file", o.tls.caFile,
		"--mqtt-cert-file", apiCrt, "--mqtt-key-file", apiKey, "--mqtt-client-id", gp+"-api",
		"--mqtt-username", "", "--mqtt-password", ""); err != nil {
		return err
	}
	n := min(demoFollowers, o.devices)
	for i := range n {
		id := devicesim.DeviceID(o.tls.devicePrefix, i)
		wg.Go(func() { d.follow(ctx, id, certDir) })
	}
	dev := devicesim.DeviceID(o.tls.devicePrefix, 0)
	base := "https://" + o.apiListen
	c := fmt.Sprintf("curl -s --cacert %s -H 'Authorization: Bearer %s'", o.tls.caFile, token)
	fmt.Fprintf(w, `demo: the device API on %[1]s/v1/ (OpenAPI at %[1]s/v1/openapi.json); %[2]d devices (%[3]s …) follow their shadow
  change %[3]s's configuration (it applies it and reports back; watch "shadow:" lines below):
    V=$(%[4]s %[1]s/v1/devices/%[3]s/shadow | grep -o '"version":[0-9]*' | head -1 | cut -d: -f2); %[4]s -X PUT %[1]s/v1/devices/%[3]s/config -H 'Content-Type: application/json' -H "If-Match: \"$V\"" -d '{"interval_s":5,"mode":"eco"}'
  or: iotpipe devices config set %[3]s --json '{"interval_s":5}' --api-url %[1]s --api-ca-file %[5]s --api-token %[6]s
`, base, n, dev, c, o.tls.caFile, token)
	return nil
}

// follow is one device that follows its shadow: on every delta it
// "applies" the desired state and reports it with the delta's version.
func (d *demoRun) follow(ctx context.Context, id, certDir string) {
	w := d.env.Stdout
	u, err := url.Parse(d.o.tls.url)
	if err != nil {
		return
	}
	files := certs.ClientFiles{CAFile: d.o.tls.caFile, CertFile: filepath.Join(certDir, id+".crt"), KeyFile: filepath.Join(certDir, id+".key")}
	tc, err := files.Config(u.Hostname())
	if err != nil {
		fmt.Fprintf(w, "demo: shadow follower %s: %v\n", id, err)
		return
	}
	var cm *autopaho.ConnectionManager
	report := func(payload []byte) {
		var delta struct {
			Version int64          `json:"version"`
			State   map[string]any `json:"state"`
		}
		if len(payload) == 0 || json.Unmarshal(payload, &delta) != nil || len(delta.State) == 0 {
			return // no delta (an empty message clears the retained one)
		}
		b, _ := json.Marshal(map[string]any{"state": map[string]any{"reported": delta.State}, "version": delta.Version, "client_token": "demo"})
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if _, err := cm.Publish(pctx, &paho.Publish{Topic: "devices/" + id + "/shadow/update", QoS: 1, Payload: b}); err != nil {
			fmt.Fprintf(w, "demo: shadow: %s could not report: %v\n", id, err)
			return
		}
		fmt.Fprintf(w, "demo: shadow: %s applied version %d %s and reported it\n", id, delta.Version, compactJSON(delta.State))
	}
	cm, err = autopaho.NewConnection(ctx, autopaho.ClientConfig{
		ServerUrls: []*url.URL{u}, TlsCfg: tc, KeepAlive: 30, CleanStartOnInitialConnection: true, ConnectTimeout: 10 * time.Second,
		OnConnectionUp: func(cm *autopaho.ConnectionManager, _ *paho.Connack) {
			go func() {
				sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				defer cancel()
				_, _ = cm.Subscribe(sctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{
					{Topic: "devices/" + id + "/shadow/update/delta", QoS: 1},
					{Topic: "devices/" + id + "/shadow/update/accepted", QoS: 1},
					{Topic: "devices/" + id + "/shadow/update/rejected", QoS: 1}}})
			}()
		},
		ClientConfig: paho.ClientConfig{ClientID: id + "-shadow", OnPublishReceived: []func(paho.PublishReceived) (bool, error){
			func(pr paho.PublishReceived) (bool, error) {
				switch pr.Packet.Topic {
				case "devices/" + id + "/shadow/update/delta":
					go report(pr.Packet.Payload) // never publish from the receive callback
				case "devices/" + id + "/shadow/update/accepted":
					var a struct{ Version int64 }
					_ = json.Unmarshal(pr.Packet.Payload, &a)
					fmt.Fprintf(w, "demo: shadow: %s report accepted, shadow version %s\n", id, strconv.FormatInt(a.Version, 10))
				case "devices/" + id + "/shadow/update/rejected":
					fmt.Fprintf(w, "demo: shadow: %s report rejected: %s\n", id, pr.Packet.Payload)
				}
				return true, nil
			}}},
	})
	if err != nil {
		fmt.Fprintf(w, "demo: shadow follower %s: %v\n", id, err)
		return
	}
	<-ctx.Done()
	dctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = cm.Disconnect(dctx)
}

func compactJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
