package main

// `iotpipe ca setup`: every certificate a broker, its services and a
// simulated fleet need, made idempotently (the docker compose stack runs it
// as a one-shot job on every `up`).

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/iotpipe/iotpipe/internal/certs"
	"github.com/iotpipe/iotpipe/internal/devicesim"
	"github.com/iotpipe/iotpipe/registry"
)

// renewBefore: a certificate that expires sooner is issued again.
const renewBefore = 30 * 24 * time.Hour

type caSetup struct {
	caDir, out        string
	dns, ips, clients []string
	devices           int
	devicePrefix      string
	checkConfig       bool
	parsedIPs         []net.IP
}

func runCASetup(env Env, args []string) error {
	var o caSetup
	f := newCmdFlags(env, "iotpipe ca setup", `Make everything mutual TLS needs, keeping what is already there and current
(run it again any time; docker compose runs it on every 'up'):
  --ca-dir   the CA (ca.crt, ca.key 0600, crl.pem), created if missing
  --out      what the broker and the clients read, never the CA key:
               ca.crt, crl.pem (copied once; 'devices revoke --crl-file' updates it)
               server/server.crt, .key    the broker's certificate (--dns, --ip)
               clients/<cn>.crt, .key     each --client (e.g. iotpipe-bridge)
               devices/<id>.crt, .key     --devices simulated devices (not registered:
                                          'iotpipe devices add/import' registers real ones)
A certificate is issued again when missing, not from this CA, expiring within
30 days, or (the server's) without one of the names asked for.`)
	caDirFlag(f, &o.caDir)
	f.String(&o.out, "out", "", "folder of the certificates the broker and the clients read")
	f.Flags.List(&o.dns, "dns", "comma-separated DNS names of the broker (its server certificate); empty: no server certificate")
	f.Flags.List(&o.ips, "ip", "comma-separated IP addresses of the broker")
	f.Flags.List(&o.clients, "client", "comma-separated common names of service identities to issue, e.g. iotpipe-bridge")
	f.Int(&o.devices, "devices", 0, "simulated devices to issue certificates for (iotpipe simulate --mqtt-cert-dir <out>/devices)")
	f.String(&o.devicePrefix, "device-prefix", "dev-", "start of every simulated device id, as iotpipe simulate --device-prefix")
	f.Bool(&o.checkConfig, "check-config", false, "validate the settings, print them and exit without writing anything")
	if err := f.Parse(args, env.Stdout); err != nil {
		return usageErr(err)
	}
	if err := o.validate(); err != nil {
		return err
	}
	if o.checkConfig {
		fmt.Fprintf(env.Stdout, "settings are valid: CA in %s; into %s: server names %s, clients %s, %d devices\n",
			o.caDir, o.out, strings.Join(append(append([]string{}, o.dns...), o.ips...), ","), strings.Join(o.clients, ","), o.devices)
		return nil
	}
	return o.run(env)
}

func (o *caSetup) validate() error {
	errs := []error{needCADir(o.caDir)}
	if o.out == "" {
		errs = append(errs, settingErr("out", "", errors.New("not set: the folder the broker and the clients read")))
	} else if o.caDir != "" && filepath.Clean(o.out) == filepath.Clean(o.caDir) {
		errs = append(errs, settingErr("out", o.out, errors.New("must not be --ca-dir: the CA key stays apart from what the broker and clients mount")))
	}
	for _, s := range o.ips {
		ip := net.ParseIP(s)
		if ip == nil {
			errs = append(errs, settingErr("ip", s, errors.New("not an IP address")))
		}
		o.parsedIPs = append(o.parsedIPs, ip)
	}
	for _, cn := range o.clients {
		if err := certs.CheckID(cn); err != nil {
			errs = append(errs, settingErr("client", cn, err))
		}
	}
	if o.devices < 0 {
		errs = append(errs, settingErr("devices", strconv.Itoa(o.devices), errors.New("must not be negative")))
	} else if o.devices > 0 {
		if err := certs.CheckID(devicesim.DeviceID(o.devicePrefix, o.devices-1)); err != nil {
			errs = append(errs, settingErr("device-prefix", o.devicePrefix, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return &UsageError{err}
	}
	return nil
}

func (o *caSetup) run(env Env) error {
	ca, err := certs.Load(o.caDir)
	switch {
	case errors.Is(err, certs.ErrNoCA):
		if ca, err = certs.Init(o.caDir, "iotpipe CA", certs.DefaultCAValidity); err != nil {
			return fmt.Errorf("%s: %w", settingName("ca-dir"), err)
		}
		if err := registry.WriteCRL(ca, nil, filepath.Join(o.caDir, certs.CRLFile), certs.DefaultCRLValidity); err != nil {
			return err
		}
		fmt.Fprintf(env.Stdout, "ca: created the CA in %s (key %s, mode 0600)\n", o.caDir, filepath.Join(o.caDir, certs.CAKeyFile))
	case err != nil:
		return fmt.Errorf("%s: %w", settingName("ca-dir"), err)
	default:
		fmt.Fprintf(env.Stdout, "ca: kept the CA in %s (valid until %s)\n", o.caDir, ca.Cert.NotAfter.UTC().Format(time.DateOnly))
	}
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return fmt.Errorf("%s: %w", settingName("out"), err)
	}
	if err := certs.WriteFile(filepath.Join(o.out, certs.CACertFile), certs.EncodeCert(ca.Cert.Raw), 0o644); err != nil {
		return err
	}
	crl := filepath.Join(o.out, certs.CRLFile)
	if _, err := os.Stat(crl); errors.Is(err, os.ErrNotExist) {
		b, err := os.ReadFile(filepath.Join(o.caDir, certs.CRLFile))
		if err != nil {
			return fmt.Errorf("%s: the CA's CRL: %w", settingName("ca-dir"), err)
		}
		if err := certs.WriteFile(crl, b, 0o644); err != nil {
			return err
		}
	}
	if len(o.dns)+len(o.ips) > 0 {
		dir := filepath.Join(o.out, "server")
		if o.keep(ca, dir, "server", func(c *x509.Certificate) bool { return hasNames(c, o.dns, o.parsedIPs) }) {
			fmt.Fprintf(env.Stdout, "ca: kept the server certificate %s\n", filepath.Join(dir, "server.crt"))
		} else {
			iss, key, err := ca.IssueServer(o.dns, o.parsedIPs, certs.DefaultServerValidity)
			if err != nil {
				return err
			}
			cp, _, err := certs.WriteKeyPair(dir, "server", iss.PEM, key)
			if err != nil {
				return fmt.Errorf("%s: %w", settingName("out"), err)
			}
			fmt.Fprintf(env.Stdout, "ca: issued the server certificate %s (names %s)\n", cp, strings.Join(append(append([]string{}, o.dns...), o.ips...), ","))
		}
	}
	issued, kept := 0, 0
	issue := func(dir, cn string) error {
		if o.keep(ca, dir, cn, nil) {
			kept++
			return nil
		}
		key, err := certs.NewKey()
		if err != nil {
			return err
		}
		iss, err := ca.IssueClient(cn, &key.PublicKey, certs.DefaultClientValidity)
		if err != nil {
			return err
		}
		if _, _, err := certs.WriteKeyPair(dir, cn, iss.PEM, key); err != nil {
			return fmt.Errorf("%s: %w", settingName("out"), err)
		}
		issued++
		return nil
	}
	for _, cn := range o.clients {
		if err := issue(filepath.Join(o.out, "clients"), cn); err != nil {
			return err
		}
	}
	if len(o.clients) > 0 {
		fmt.Fprintf(env.Stdout, "ca: client certificates %s in %s (%d issued, %d kept)\n", strings.Join(o.clients, ","), filepath.Join(o.out, "clients"), issued, kept)
	}
	issued, kept = 0, 0
	devDir := filepath.Join(o.out, "devices")
	for i := range o.devices {
		if err := issue(devDir, devicesim.DeviceID(o.devicePrefix, i)); err != nil {
			return err
		}
	}
	if o.devices > 0 {
		if err := certs.WriteFile(filepath.Join(devDir, certs.CACertFile), certs.EncodeCert(ca.Cert.Raw), 0o644); err != nil {
			return err
		}
		fmt.Fprintf(env.Stdout, "ca: %d device certificates (%s … %s) in %s (%d issued, %d kept)\n", o.devices,
			devicesim.DeviceID(o.devicePrefix, 0), devicesim.DeviceID(o.devicePrefix, o.devices-1), devDir, issued, kept)
	}
	return nil
}

// keep reports whether dir holds name's key and certificate, issued by ca,
// valid for at least renewBefore and, if ok is set, accepted by it.
func (o *caSetup) keep(ca *certs.CA, dir, name string, ok func(*x509.Certificate) bool) bool {
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key"))
	if err != nil {
		return false
	}
	c, err := x509.ParseCertificate(pair.Certificate[0])
	return err == nil && c.CheckSignatureFrom(ca.Cert) == nil && time.Until(c.NotAfter) >= renewBefore && (ok == nil || ok(c))
}

// hasNames reports whether c holds every DNS name and IP address.
func hasNames(c *x509.Certificate, dns []string, ips []net.IP) bool {
	for _, d := range dns {
		if !slices.Contains(c.DNSNames, d) {
			return false
		}
	}
	for _, ip := range ips {
		if !slices.ContainsFunc(c.IPAddresses, ip.Equal) {
			return false
		}
	}
	return true
}
