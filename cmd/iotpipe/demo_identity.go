package main

// The demo's identities: with --mqtt-tls (the default) the bridge and every
// simulated device connect to the broker's mutual-TLS listener, each
// device with its own certificate (CN = device id), registered in the
// device registry like any device added with 'iotpipe devices add'.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/iotpipe/iotpipe/internal/certs"
	"github.com/iotpipe/iotpipe/internal/devicesim"
	"github.com/iotpipe/iotpipe/registry"
)

// demoGroup is the registry group of the demo's devices.
const demoGroup = "demo"

// demoTLS are the demo's mutual-TLS settings.
type demoTLS struct {
	on                    bool
	url, caFile           string
	bridgeCert, bridgeKey string
	caDir, registryDSN    string
	devicePrefix          string
}

func (t *demoTLS) bind(f *cmdFlags) {
	f.Group("Identity (mutual TLS)")
	f.Bool(&t.on, "mqtt-tls", true, "run the bridge and the fleet on the broker's mutual-TLS listener, each simulated device with its own certificate registered in the device registry (false: the plaintext listener and the password users of IOTPIPE_MQTT_URL)")
	f.String(&t.url, "mqtt-tls-url", "", "the broker's TLS listener, mqtts://host:port ('scripts/services.sh env' sets it)")
	f.String(&t.caFile, "mqtt-tls-ca-file", "", "PEM file of the CA the broker's certificate chains to")
	f.String(&t.bridgeCert, "mqtt-tls-bridge-cert-file", "", "the bridge's client certificate (CN iotpipe-bridge: 'iotpipe ca client iotpipe-bridge')")
	f.String(&t.bridgeKey, "mqtt-tls-bridge-key-file", "", "the key of --mqtt-tls-bridge-cert-file")
	caDirFlag(f, &t.caDir)
	f.Secret(&t.registryDSN, "pg-registry-dsn", "", "database URL of a member of the registry role, to register the demo's devices")
	f.String(&t.devicePrefix, "device-prefix", "dev-", "start of every simulated device id (the device number follows, 6 digits); the id is the certificate's CN")
}

func (t *demoTLS) validate(devices int) error {
	var errs []error
	if devices >= 1 {
		if err := certs.CheckID(devicesim.DeviceID(t.devicePrefix, devices-1)); err != nil {
			errs = append(errs, settingErr("device-prefix", t.devicePrefix, err))
		}
	}
	if !t.on {
		return errors.Join(errs...)
	}
	var unset []error
	if !strings.HasPrefix(t.url, "mqtts://") {
		unset = append(unset, settingErr("mqtt-tls-url", t.url, errors.New("want mqtts://host:port")))
	}
	for _, s := range []struct{ name, v string }{{"mqtt-tls-ca-file", t.caFile}, {"mqtt-tls-bridge-cert-file", t.bridgeCert},
		{"mqtt-tls-bridge-key-file", t.bridgeKey}, {"ca-dir", t.caDir}, {"pg-registry-dsn", t.registryDSN}} {
		if s.v == "" {
			unset = append(unset, settingErr(s.name, "", errors.New("not set")))
		}
	}
	if len(unset) > 0 {
		errs = append(errs, errors.Join(unset...),
			errors.New("the demo runs over mutual TLS: set those ('eval \"$(scripts/services.sh env)\"' does, as make demo) or run without TLS with --mqtt-tls=false (IOTPIPE_MQTT_TLS=false)"))
	}
	return errors.Join(errs...)
}

// bridgeArgs are the bridge's connection flags.
func (t *demoTLS) bridgeArgs() []string {
	if !t.on {
		return nil
	}
	return []string{"--mqtt-url", t.url, "--mqtt-ca-file", t.caFile, "--mqtt-cert-file", t.bridgeCert, "--mqtt-key-file", t.bridgeKey,
		"--mqtt-username", "", "--mqtt-password", ""}
}

// shadowArgs route the devices' shadow topics to Kafka (the demo runs
// the shadow consumer and the API with mutual TLS only).
func (t *demoTLS) shadowArgs() []string {
	if !t.on {
		return nil
	}
	return []string{"--topic-shadow", demoShadowTopic}
}

// simulatorArgs are the fleet's connection flags; certDir holds a
// certificate per device.
func (t *demoTLS) simulatorArgs(certDir string) []string {
	if !t.on {
		return nil
	}
	return []string{"--mqtt-url", t.url, "--mqtt-ca-file", t.caFile, "--mqtt-cert-dir", certDir,
		"--mqtt-device-username", "", "--mqtt-device-password", ""}
}

// identityCounts says what demoIdentities did.
type identityCounts struct{ registered, reissued, reused int }

// demoIdentities makes sure each of the fleet's devices is registered and
// active, and has a current certificate from the CA in dir
// (<id>.crt, <id>.key 0600, and ca.crt): a device not in the registry is
// registered (group demo) with a new certificate; a registered one whose
// files are missing, expire within a day, are not from this CA or are not
// its current certificate is reissued one; otherwise its files are kept.
// A disabled or revoked device is an error: the broker would refuse it.
func demoIdentities(ctx context.Context, t *demoTLS, schema string, devices int, dir string) (identityCounts, error) {
	var n identityCounts
	ca, err := loadCA(t.caDir)
	if err != nil {
		return n, err
	}
	s, err := registry.Open(ctx, t.registryDSN, schema)
	if err != nil {
		return n, fmt.Errorf("register the demo's devices at %s: %w", settingName("pg-registry-dsn"), err)
	}
	defer s.Close()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return n, fmt.Errorf("demo certificates: %w", err)
	}
	if err := certs.WriteFile(filepath.Join(dir, certs.CACertFile), certs.EncodeCert(ca.Cert.Raw), 0o644); err != nil {
		return n, err
	}
	var add []registry.NewDevice
	var written []string
	for i := range devices {
		id := devicesim.DeviceID(t.devicePrefix, i)
		dev, _, err := s.Get(ctx, id)
		switch {
		case errors.Is(err, registry.ErrNotFound):
		case err != nil:
			return n, fmt.Errorf("demo device %s: %w", id, err)
		case dev.Status != registry.Active:
			return n, fmt.Errorf("demo device %s is %s in the registry, so the broker refuses it: 'iotpipe devices enable %s' (if disabled) or another %s", id, dev.Status, id, settingName("device-prefix"))
		case currentFiles(ca, dir, id, dev.CertSerial):
			n.reused++
			continue
		}
		key, err := certs.NewKey()
		if err != nil {
			return n, err
		}
		iss, err := ca.IssueClient(id, &key.PublicKey, certs.DefaultClientValidity)
		if err != nil {
			return n, err
		}
		cp, kp, err := certs.WriteKeyPair(dir, id, iss.PEM, key)
		if err != nil {
			return n, fmt.Errorf("demo device %s: %w", id, err)
		}
		if dev == nil {
			written = append(written, cp, kp)
			add = append(add, registry.NewDevice{ID: id, DisplayName: fmt.Sprintf("demo device %d", i), Type: "simulated",
				Attributes: map[string]string{"source": "iotpipe-demo"}, Groups: []string{demoGroup}, Cert: iss.Cert})
			continue
		}
		if err := s.Reissue(ctx, id, iss.Cert); err != nil {
			return n, fmt.Errorf("demo device %s: %w", id, err)
		}
		n.reissued++
	}
	if len(add) > 0 {
		if err := s.Add(ctx, add...); err != nil {
			removeAll(written)
			return n, fmt.Errorf("register the demo's devices: %w", err)
		}
		n.registered = len(add)
	}
	return n, nil
}

// currentFiles reports whether dir holds id's key and its current
// certificate (serial), issued by ca and valid for at least another day.
func currentFiles(ca *certs.CA, dir, id, serial string) bool {
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, id+".crt"), filepath.Join(dir, id+".key"))
	if err != nil {
		return false
	}
	c, err := x509.ParseCertificate(pair.Certificate[0])
	return err == nil && certs.SerialHex(c.SerialNumber) == serial && c.CheckSignatureFrom(ca.Cert) == nil &&
		time.Until(c.NotAfter) >= 24*time.Hour
}
