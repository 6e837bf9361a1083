package main

// `iotpipe devices add|list|show|disable|enable|revoke|import|sync`: the
// device registry (package registry) and the certificates of its devices
// (internal/certs).

import (
	"context"
	"crypto/ecdsa"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/iotpipe/iotpipe/internal/certs"
	"github.com/iotpipe/iotpipe/registry"
)

const devicesSummary = "the device registry: add (register and issue a certificate), list, show, disable, enable, revoke, reissue, import (CSV), sync"

const devicesUsage = `Usage: iotpipe devices <command> [args] [flags]

  add <id>       register a device and issue its client certificate (CN = id) into --out
  list           the devices, filtered by --attr k=v, --group g, --status s
  show <id>      one device: attributes, groups, certificates, last seen
  disable <id>   refuse it at the broker (ACL deny) and in bridge --require-registered; reversible
  enable <id>    undo disable
  revoke <id>    final: its certificates go into the CRL and the broker refuses it
                 (--previous: only the certificates before its current one, after a reissue)
  reissue <id>   rotate: issue the device a new certificate into --out; the old one stays valid
                 until 'devices revoke <id> --previous'
  import <file>  register many devices from a CSV file (one transaction) and issue their certificates
  sync           rewrite the CRL and the ACL's deny list from the registry and signal the broker
                 (also renews the CRL before it expires; run it from cron every month)
  shadow get|set <id>   read a device's shadow, or change its desired state (merge patch), over iotpipe api
  config set <id>       replace a device's desired configuration, over iotpipe api

A device id is its MQTT topic level (devices/<id>/...) and its certificate's
CN, which the broker uses as the MQTT user name: the ACL lets it write only
devices/<id>/... Run 'iotpipe devices <command> --help' for the flags.
`

func runDevices(ctx context.Context, env Env, args []string) error {
	if help, err := groupHelp(env, args, devicesUsage, "which devices command? add, list, show, disable, enable, revoke, import or sync"); help {
		return err
	}
	rest := args[1:]
	switch args[0] {
	case "add":
		return runDevicesAdd(ctx, env, rest)
	case "list":
		return runDevicesList(ctx, env, rest)
	case "show":
		return runDevicesShow(ctx, env, rest)
	case "disable":
		return runDevicesStatus(ctx, env, rest, registry.Disabled)
	case "enable":
		return runDevicesStatus(ctx, env, rest, registry.Active)
	case "revoke":
		return runDevicesStatus(ctx, env, rest, registry.Revoked)
	case "reissue":
		return runDevicesReissue(ctx, env, rest)
	case "import":
		return runDevicesImport(ctx, env, rest)
	case "sync":
		return runDevicesSync(ctx, env, rest)
	case "shadow":
		return runDevicesShadow(ctx, env, rest)
	case "config":
		return runDevicesConfig(ctx, env, rest)
	}
	return &UsageError{fmt.Errorf("unknown devices command %q (see iotpipe devices --help)", args[0])}
}

// registryFlags are the settings that reach the registry and the broker.
type registryFlags struct {
	dsn, schema string
	timeout     time.Duration
	// broker files
	caDir, crlFile, aclFile, pidFile string
	crlValidity                      time.Duration
}

func (r *registryFlags) bind(f *cmdFlags, broker bool) {
	f.Group("Registry (PostgreSQL)")
	f.Secret(&r.dsn, "pg-registry-dsn", "postgres://iotpipe_devices@localhost:5432/iotpipe?sslmode=verify-full", "database URL of a member of the registry role iotpipe_registry")
	f.String(&r.schema, "pg-schema", "iotpipe", "schema that holds the registry (created by iotpipe init)")
	f.Duration(&r.timeout, "timeout", 30*time.Second, "time the command has to finish")
	if broker {
		f.Group("Certificates and broker")
		caDirFlag(f, &r.caDir)
		f.String(&r.crlFile, "crl-file", "", "the broker's crlfile, rewritten from the registry on every status change; empty: <ca-dir>/crl.pem")
		f.Duration(&r.crlValidity, "crl-validity", certs.DefaultCRLValidity, "the CRL's next-update time from now; the broker refuses EVERY client once it has passed, so run 'devices sync' well before")
		f.String(&r.aclFile, "mqtt-acl-file", "", "the broker's acl_file: its deny section (disabled and revoked devices) is rewritten; empty: skipped (then a connected device keeps publishing until it reconnects)")
		f.String(&r.pidFile, "mqtt-broker-pid-file", "", "file with the broker's process id, sent SIGHUP to reread the CRL and ACL file; empty: reload the broker yourself")
	}
}

func (r *registryFlags) check() error {
	var errs []error
	if _, err := pgx.ParseConfig(r.dsn); err != nil {
		errs = append(errs, settingErr("pg-registry-dsn", "", fmt.Errorf("invalid database URL: %w", err)))
	}
	if r.schema == "" {
		errs = append(errs, settingErr("pg-schema", "", errors.New("must not be empty")))
	}
	if r.timeout <= 0 {
		errs = append(errs, settingErr("timeout", r.timeout.String(), errors.New("must be positive")))
	}
	if r.crlValidity < 0 {
		errs = append(errs, settingErr("crl-validity", r.crlValidity.String(), errors.New("must be positive")))
	}
	if len(errs) > 0 {
		return &UsageError{errors.Join(errs...)}
	}
	return nil
}

func (r *registryFlags) open(ctx context.Context) (*registry.Store, error) {
	s, err := registry.Open(ctx, r.dsn, r.schema)
	if err != nil {
		if errors.Is(err, registry.ErrNoSchema) {
			return nil, fmt.Errorf("%w (%s is %q)", err, settingName("pg-schema"), r.schema)
		}
		return nil, fmt.Errorf("cannot reach the registry at %s: %w", settingName("pg-registry-dsn"), err)
	}
	return s, nil
}

// registrySession is the registry opened by a devices command, with the CA of
// --ca-dir when the command needs it.
type registrySession struct {
	*registry.Store
	ca     *certs.CA
	cancel context.CancelFunc
}

// Close closes the store and ends the command's --timeout.
func (s *registrySession) Close() {
	s.Store.Close()
	s.cancel()
}

// connect loads the CA of --ca-dir (withCA) and opens the registry; the
// returned context ends after --timeout, or at Close.
func (r *registryFlags) connect(ctx context.Context, withCA bool) (context.Context, *registrySession, error) {
	var ca *certs.CA
	if withCA {
		var err error
		if ca, err = loadCA(r.caDir); err != nil {
			return ctx, nil, err
		}
	}
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	s, err := r.open(ctx)
	if err != nil {
		cancel()
		return ctx, nil, err
	}
	return ctx, &registrySession{Store: s, ca: ca, cancel: cancel}, nil
}

// connectBroker checks the flags of a command that updates the broker's
// files and connects with the CA.
func (r *registryFlags) connectBroker(ctx context.Context) (context.Context, *registrySession, error) {
	if err := errors.Join(r.check(), needCADir(r.caDir)); err != nil {
		return ctx, nil, &UsageError{err}
	}
	return r.connect(ctx, true)
}

// applyBroker rewrites the CRL and ACL deny list and signals the broker,
// saying what it did.
func (r *registryFlags) applyBroker(ctx context.Context, env Env, s *registrySession) error {
	ca := s.ca
	crl := r.crlFile
	if crl == "" {
		crl = filepath.Join(r.caDir, certs.CRLFile)
	}
	res, err := s.ApplyBroker(ctx, registry.BrokerFiles{CA: ca, CRLFile: crl, CRLValidity: r.crlValidity, ACLFile: r.aclFile, PIDFile: r.pidFile})
	if err != nil {
		return fmt.Errorf("update the broker (%s, %s, %s): %w", settingName("crl-file"), settingName("mqtt-acl-file"), settingName("mqtt-broker-pid-file"), err)
	}
	line := fmt.Sprintf("broker: CRL %s lists %d revoked certificate(s)", crl, res.Revoked)
	if r.aclFile != "" {
		line += fmt.Sprintf("; ACL %s denies %d device(s)", r.aclFile, len(res.Denied))
	} else {
		line += fmt.Sprintf("; no ACL file (%s), so a connected device is not cut off", settingName("mqtt-acl-file"))
	}
	if res.Signaled != 0 {
		line += fmt.Sprintf("; sent SIGHUP to the broker (pid %d), which applies both at once", res.Signaled)
	} else {
		line += fmt.Sprintf("; no broker pid file (%s): reload the broker (SIGHUP) to apply", settingName("mqtt-broker-pid-file"))
	}
	fmt.Fprintln(env.Stdout, line)
	return nil
}

// kvList is a repeatable k=v flag (--attr site=lyon --attr floor=2, or
// site=lyon,floor=2).
type kvList struct{ m *map[string]string }

func (k kvList) String() string {
	if k.m == nil || *k.m == nil {
		return ""
	}
	keys := make([]string, 0, len(*k.m))
	for key := range *k.m {
		keys = append(keys, key)
	}
	sort.Strings(keys)
	var parts []string
	for _, key := range keys {
		parts = append(parts, key+"="+(*k.m)[key])
	}
	return strings.Join(parts, ",")
}

func (k kvList) Set(s string) error {
	if *k.m == nil {
		*k.m = map[string]string{}
	}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		key, v, ok := strings.Cut(part, "=")
		if !ok || strings.TrimSpace(key) == "" {
			return fmt.Errorf("%q: want key=value", part)
		}
		(*k.m)[strings.TrimSpace(key)] = strings.TrimSpace(v)
	}
	return nil
}

// strList is a repeatable string flag (--group a --group b, or a,b).
type strList struct{ p *[]string }

func (l strList) String() string {
	if l.p == nil {
		return ""
	}
	return strings.Join(*l.p, ",")
}

func (l strList) Set(s string) error {
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			*l.p = append(*l.p, part)
		}
	}
	return nil
}

// deviceFiles writes a device's certificate, key and the CA certificate
// into out, refusing to overwrite an existing certificate or key.
func deviceFiles(out, id string, iss *certs.Issued, key *ecdsa.PrivateKey, ca *certs.CA) ([]string, error) {
	crt, kf := filepath.Join(out, id+".crt"), filepath.Join(out, id+".key")
	for _, p := range []string{crt, kf} {
		if _, err := os.Stat(p); err == nil {
			return nil, fmt.Errorf("%s: %s exists already; move it away or use another --out", settingName("out"), p)
		}
	}
	if err := os.MkdirAll(out, 0o700); err != nil {
		return nil, fmt.Errorf("%s: %w", settingName("out"), err)
	}
	var written []string
	if key != nil {
		pem, err := certs.EncodeKey(key)
		if err != nil {
			return nil, err
		}
		if err := certs.WriteFile(kf, pem, 0o600); err != nil {
			return nil, err
		}
		written = append(written, kf)
	}
	if err := certs.WriteFile(crt, iss.PEM, 0o644); err != nil {
		return written, err
	}
	written = append(written, crt)
	cacrt := filepath.Join(out, certs.CACertFile)
	if err := certs.WriteFile(cacrt, certs.EncodeCert(ca.Cert.Raw), 0o644); err != nil {
		return written, err
	}
	return written, nil
}

func removeAll(paths []string) {
	for _, p := range paths {
		_ = os.Remove(p)
	}
}

func runDevicesAdd(ctx context.Context, env Env, args []string) error {
	id, args, perr := positional(args, "the device id")
	var r registryFlags
	var c issueFlags
	var name, typ string
	var attrs map[string]string
	var groups []string
	f := newCmdFlags(env, "iotpipe devices add <id>", `Register a device and issue its client certificate: CN = <id>, extended key
usage clientAuth, ECDSA P-256, signed by the CA in --ca-dir. Writes
<out>/<id>.crt, <out>/<id>.key (mode 0600; or no key with --csr, the device
keeps its own) and <out>/ca.crt (the broker's CA, for the device to check the
broker). Put the three files on the device; it connects with them to the
broker's TLS listener and may then publish only on devices/<id>/...
Example:
  iotpipe devices add sensor-42 --attr site=lyon --group building-a --out ./sensor-42`)
	r.bind(f, false)
	f.Group("Device")
	caDirFlag(f, &r.caDir)
	f.String(&c.out, "out", ".", "folder the device's certificate, key and ca.crt are written to (never overwritten)")
	f.String(&name, "name", "", "display name")
	f.String(&typ, "type", "", "device type (model, kind)")
	f.Flags.Var(kvList{&attrs}, &attrs, "attr", "attribute key=value; repeat the flag or separate by commas")
	f.Flags.Var(strList{&groups}, &groups, "group", "group to put the device in (created if missing); repeat the flag or separate by commas")
	f.String(&c.csrFile, "csr", "", "PEM certificate signing request made on the device: the certificate is issued for its key and no key is written")
	validityFlag(f, &c.validity, certs.DefaultClientValidity, "device certificate")
	if err := parseAfterPositional(env, f, args, perr); err != nil {
		return err
	}
	nd, written, err := c.issue(ctx, &r, id, func(ctx context.Context, s *registrySession, nd registry.NewDevice) error {
		nd.DisplayName, nd.Type, nd.Attributes, nd.Groups = name, typ, attrs, groups
		return s.Add(ctx, nd)
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "devices: added %s (serial %s, valid until %s); files: %s\n",
		id, certs.SerialHex(nd.Cert.SerialNumber), nd.Cert.NotAfter.UTC().Format(time.DateOnly), strings.Join(append(written, filepath.Join(c.out, certs.CACertFile)), ", "))
	return nil
}

// issueDevice issues a device's certificate, from csrPEM or from a new key
// (returned; nil with a CSR).
func issueDevice(ca *certs.CA, id string, csrPEM []byte, validity time.Duration) (registry.NewDevice, *ecdsa.PrivateKey, error) {
	if csrPEM != nil {
		iss, err := ca.IssueClientCSR(id, csrPEM, validity)
		if err != nil {
			return registry.NewDevice{}, nil, err
		}
		return registry.NewDevice{ID: id, Cert: iss.Cert}, nil, nil
	}
	iss, key, err := ca.IssueClientKey(id, validity)
	if err != nil {
		return registry.NewDevice{}, nil, err
	}
	return registry.NewDevice{ID: id, Cert: iss.Cert}, key, nil
}

// issueDeviceFiles issues a device's certificate (issueDevice) and writes it
// into out (deviceFiles), returning the files written; on error it removes
// those it wrote.
func issueDeviceFiles(ca *certs.CA, id string, csrPEM []byte, validity time.Duration, out string) (registry.NewDevice, []string, error) {
	nd, key, err := issueDevice(ca, id, csrPEM, validity)
	if err != nil {
		return nd, nil, err
	}
	written, err := deviceFiles(out, id, &certs.Issued{Cert: nd.Cert, PEM: certs.EncodeCert(nd.Cert.Raw)}, key, ca)
	if err != nil {
		removeAll(written)
		return nd, nil, err
	}
	return nd, written, nil
}

// issueFlags are the flags of devices add and reissue that say what
// certificate to issue and where it goes.
type issueFlags struct {
	out, csrFile string
	validity     time.Duration
}

// issue checks the flags, reads --csr, opens the registry and the CA,
// issues the device's certificate into --out and records it with record;
// the files written are removed when that fails.
func (c *issueFlags) issue(ctx context.Context, r *registryFlags, id string, record func(context.Context, *registrySession, registry.NewDevice) error) (registry.NewDevice, []string, error) {
	if err := errors.Join(r.check(), certs.CheckDeviceID(id), checkValidity(c.validity), needCADir(r.caDir)); err != nil {
		return registry.NewDevice{}, nil, &UsageError{err}
	}
	var csrPEM []byte
	if c.csrFile != "" {
		b, err := os.ReadFile(c.csrFile)
		if err != nil {
			return registry.NewDevice{}, nil, &UsageError{settingErr("csr", c.csrFile, err)}
		}
		csrPEM = b
	}
	ctx, s, err := r.connect(ctx, true)
	if err != nil {
		return registry.NewDevice{}, nil, err
	}
	defer s.Close()
	nd, written, err := issueDeviceFiles(s.ca, id, csrPEM, c.validity, c.out)
	if err != nil {
		return nd, nil, err
	}
	if err := record(ctx, s, nd); err != nil {
		removeAll(written)
		return nd, nil, err
	}
	return nd, written, nil
}

func runDevicesList(ctx context.Context, env Env, args []string) error {
	var r registryFlags
	var attrs map[string]string
	var group, status string
	var asJSON bool
	f := newCmdFlags(env, "iotpipe devices list", `List the registered devices: id, status, type, groups, attributes, certificate
expiry and when last seen (from device_activity). Filters combine (AND).`)
	r.bind(f, false)
	f.Group("Filters")
	f.Flags.Var(kvList{&attrs}, &attrs, "attr", "only devices with attribute key=value; repeat for several")
	f.String(&group, "group", "", "only members of this group or of a group nested in it")
	f.String(&status, "status", "", "only devices with this status: active, disabled or revoked")
	f.Bool(&asJSON, "json", false, "print JSON lines instead of a table")
	if err := f.Parse(args, env.Stdout); err != nil {
		return usageErr(err)
	}
	var errs []error
	errs = append(errs, r.check())
	switch registry.Status(status) {
	case "", registry.Active, registry.Disabled, registry.Revoked:
	default:
		errs = append(errs, settingErr("status", status, errors.New("want active, disabled or revoked")))
	}
	if err := errors.Join(errs...); err != nil {
		return &UsageError{err}
	}
	ctx, s, err := r.connect(ctx, false)
	if err != nil {
		return err
	}
	defer s.Close()
	devs, err := s.List(ctx, registry.Filter{Attributes: attrs, Group: group, Status: registry.Status(status)})
	if err != nil {
		return err
	}
	if asJSON {
		enc := json.NewEncoder(env.Stdout)
		for i := range devs {
			if err := enc.Encode(&devs[i]); err != nil {
				return err
			}
		}
		return nil
	}
	tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DEVICE\tSTATUS\tTYPE\tGROUPS\tATTRIBUTES\tCERT EXPIRES\tLAST SEEN")
	for _, d := range devs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", d.ID, d.Status, dash(d.Type), dash(strings.Join(d.Groups, ",")),
			dash(kvList{&d.Attributes}.String()), dash(fmtTime(d.CertNotAfter, time.DateOnly)), dash(fmtTime(d.LastSeen, time.RFC3339)))
	}
	_ = tw.Flush()
	fmt.Fprintf(env.Stdout, "%d device(s)\n", len(devs))
	return nil
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func fmtTime(t *time.Time, layout string) string {
	if t == nil {
		return ""
	}
	return t.UTC().Format(layout)
}

func runDevicesShow(ctx context.Context, env Env, args []string) error {
	id, args, perr := positional(args, "the device id")
	var r registryFlags
	var asJSON bool
	f := newCmdFlags(env, "iotpipe devices show <id>", "Show one device: its settings, groups, every certificate issued to it and when it was last seen.")
	r.bind(f, false)
	f.Bool(&asJSON, "json", false, "print JSON")
	if err := parseAfterPositional(env, f, args, perr); err != nil {
		return err
	}
	if err := r.check(); err != nil {
		return err
	}
	ctx, s, err := r.connect(ctx, false)
	if err != nil {
		return err
	}
	defer s.Close()
	d, cs, err := s.Get(ctx, id)
	if err != nil {
		return err
	}
	if asJSON {
		return json.NewEncoder(env.Stdout).Encode(struct {
			*registry.Device
			Certificates []registry.Certificate `json:"certificates"`
		}{d, cs})
	}
	tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "device\t%s\nstatus\t%s\nname\t%s\ntype\t%s\ngroups\t%s\nattributes\t%s\ncreated\t%s\nupdated\t%s (version %d)\nlast seen\t%s\n",
		d.ID, d.Status, dash(d.DisplayName), dash(d.Type), dash(strings.Join(d.Groups, ",")), dash(kvList{&d.Attributes}.String()),
		d.CreatedAt.UTC().Format(time.RFC3339), d.UpdatedAt.UTC().Format(time.RFC3339), d.Version, dash(fmtTime(d.LastSeen, time.RFC3339)))
	for _, c := range cs {
		state := "valid"
		if c.RevokedAt != nil {
			state = "revoked " + c.RevokedAt.UTC().Format(time.RFC3339)
		} else if c.NotAfter.Before(time.Now()) {
			state = "expired"
		}
		fmt.Fprintf(tw, "certificate\t%s  %s .. %s  %s\n", c.Serial, c.NotBefore.UTC().Format(time.DateOnly), c.NotAfter.UTC().Format(time.DateOnly), state)
	}
	return tw.Flush()
}

func runDevicesStatus(ctx context.Context, env Env, args []string, to registry.Status) error {
	verb := map[registry.Status]string{registry.Disabled: "disable", registry.Active: "enable", registry.Revoked: "revoke"}[to]
	help := map[registry.Status]string{
		registry.Disabled: `Disable a device: the broker's ACL denies it every topic (also on the
connection it has open, once the broker rereads the ACL file), and a bridge
with --require-registered dead-letters its readings (unknown_device).
Reversible with 'iotpipe devices enable'.`,
		registry.Active: `Enable a disabled device again (a revoked one cannot be: issue it a new
identity with another id, or remove and re-add it).`,
		registry.Revoked: `Revoke a device, for good: every certificate issued to it goes into the CRL
(--crl-file), so the broker refuses its next TLS handshake, and the ACL deny
section (--mqtt-acl-file) stops the connection it has open from publishing or
subscribing; SIGHUP to the broker (--mqtt-broker-pid-file) applies both.
Measured on Mosquitto 2.0.11 (it rereads the CRL and the ACL file on SIGHUP,
not by itself): a device publishing every 10 ms had its next PUBLISH refused
(PUBACK 0x87) at most 19 ms after this command returned (six runs), and its
reconnect failed.`,
	}[to]
	id, args, perr := positional(args, "the device id")
	var r registryFlags
	var previous bool
	f := newCmdFlags(env, "iotpipe devices "+verb+" <id>", help)
	r.bind(f, true)
	if to == registry.Revoked {
		f.Group("Rotation")
		f.Bool(&previous, "previous", false, "revoke only the certificates issued before the device's current one (after 'devices reissue' and once the device uses the new one); the device stays active. A connection opened with an old certificate lasts until it ends")
	}
	if err := parseAfterPositional(env, f, args, perr); err != nil {
		return err
	}
	ctx, s, err := r.connectBroker(ctx)
	if err != nil {
		return err
	}
	defer s.Close()
	if previous {
		n, err := s.RevokePrevious(ctx, id)
		if err != nil {
			return err
		}
		fmt.Fprintf(env.Stdout, "devices: revoked %d earlier certificate(s) of %s; it stays as it is with its current one\n", n, id)
		return r.applyBroker(ctx, env, s)
	}
	from, err := s.SetStatus(ctx, id, to)
	if err != nil {
		return err
	}
	if from == to {
		fmt.Fprintf(env.Stdout, "devices: %s was %s already\n", id, to)
	} else {
		fmt.Fprintf(env.Stdout, "devices: %s %s → %s\n", id, from, to)
	}
	return r.applyBroker(ctx, env, s)
}

func runDevicesReissue(ctx context.Context, env Env, args []string) error {
	id, args, perr := positional(args, "the device id")
	var r registryFlags
	var c issueFlags
	f := newCmdFlags(env, "iotpipe devices reissue <id>", `Rotate a device's identity: issue it a new client certificate (CN = <id>) into
--out (<id>.crt, <id>.key 0600 or none with --csr, ca.crt) and record it as
its current one. Its earlier certificates stay valid, so the device can
switch over; then retire them with 'iotpipe devices revoke <id> --previous'.`)
	r.bind(f, false)
	f.Group("Certificate")
	caDirFlag(f, &r.caDir)
	f.String(&c.out, "out", ".", "folder the new certificate, key and ca.crt are written to (never overwritten)")
	f.String(&c.csrFile, "csr", "", "PEM certificate signing request made on the device: no key is written")
	validityFlag(f, &c.validity, certs.DefaultClientValidity, "device certificate")
	if err := parseAfterPositional(env, f, args, perr); err != nil {
		return err
	}
	nd, written, err := c.issue(ctx, &r, id, func(ctx context.Context, s *registrySession, nd registry.NewDevice) error {
		return s.Reissue(ctx, id, nd.Cert)
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "devices: reissued %s (serial %s, valid until %s); files: %s; once the device uses them: iotpipe devices revoke %s --previous\n",
		id, certs.SerialHex(nd.Cert.SerialNumber), nd.Cert.NotAfter.UTC().Format(time.DateOnly), strings.Join(written, ", "), id)
	return nil
}

func runDevicesSync(ctx context.Context, env Env, args []string) error {
	var r registryFlags
	f := newCmdFlags(env, "iotpipe devices sync", `Rewrite the broker's CRL and the ACL file's deny section from the registry and
send the broker SIGHUP. Every status change does this already; run it to renew
the CRL before --crl-validity runs out (the broker refuses every client with an
expired CRL), e.g. monthly from cron, or after restoring the registry.`)
	r.bind(f, true)
	if err := f.Parse(args, env.Stdout); err != nil {
		return usageErr(err)
	}
	ctx, s, err := r.connectBroker(ctx)
	if err != nil {
		return err
	}
	defer s.Close()
	return r.applyBroker(ctx, env, s)
}

// importColumns are the CSV columns devices import reads; only device_id
// is required.
var importColumns = []string{"device_id", "display_name", "type", "attributes", "groups", "csr"}

func runDevicesImport(ctx context.Context, env Env, args []string) error {
	file, args, perr := positional(args, "the CSV file")
	var r registryFlags
	var out string
	var validity time.Duration
	f := newCmdFlags(env, "iotpipe devices import <file.csv>", `Register many devices from a CSV file with a header line, and issue their
certificates into --out (<id>.crt, <id>.key 0600, and ca.crt). Columns (any
order; only device_id is required):
  device_id     the id (MQTT topic level, certificate CN)
  display_name  human-readable name
  type          device type
  attributes    key=value pairs separated by ';'  (site=lyon;floor=2)
  groups        group ids separated by ';'
  csr           path of a PEM CSR made on the device (relative to the CSV file); no key is written
Every line is checked first and every error is reported with its line
number; then all devices are registered in one transaction: either all are
or none is (and the files written are removed).`)
	r.bind(f, false)
	f.Group("Certificates")
	caDirFlag(f, &r.caDir)
	f.String(&out, "out", ".", "folder the certificates and keys are written to (never overwritten)")
	validityFlag(f, &validity, certs.DefaultClientValidity, "device certificates")
	if err := parseAfterPositional(env, f, args, perr); err != nil {
		return err
	}
	if err := errors.Join(r.check(), checkValidity(validity), needCADir(r.caDir)); err != nil {
		return &UsageError{err}
	}
	fh, err := os.Open(file)
	if err != nil {
		return &UsageError{fmt.Errorf("devices import: %w", err)}
	}
	defer fh.Close()
	rows, err := readImport(fh, filepath.Dir(file))
	if err != nil {
		return &UsageError{fmt.Errorf("%s: %w", file, err)}
	}
	ctx, s, err := r.connect(ctx, true)
	if err != nil {
		return err
	}
	defer s.Close()
	var written []string
	devs := make([]registry.NewDevice, 0, len(rows))
	for _, row := range rows {
		nd, w, err := issueDeviceFiles(s.ca, row.dev.ID, row.csr, validity, out)
		if err != nil {
			removeAll(written)
			return fmt.Errorf("%s line %d: %w", file, row.line, err)
		}
		written = append(written, w...)
		nd.DisplayName, nd.Type, nd.Attributes, nd.Groups = row.dev.DisplayName, row.dev.Type, row.dev.Attributes, row.dev.Groups
		devs = append(devs, nd)
	}
	if err := s.Add(ctx, devs...); err != nil {
		removeAll(written)
		return fmt.Errorf("%s: nothing imported: %w", file, err)
	}
	fmt.Fprintf(env.Stdout, "devices: imported %d device(s) from %s; certificates and keys in %s\n", len(devs), file, out)
	return nil
}

type importRow struct {
	line int
	dev  registry.NewDevice
	csr  []byte
}

// readImport parses and checks every line, reporting all errors.
func readImport(in io.Reader, base string) ([]importRow, error) {
	cr := csv.NewReader(in)
	cr.FieldsPerRecord = -1
	cr.TrimLeadingSpace = true
	header, err := cr.Read()
	if err != nil {
		return nil, fmt.Errorf("read the header line: %w", err)
	}
	col := map[string]int{}
	for i, h := range header {
		h = strings.TrimSpace(strings.TrimPrefix(h, "\ufeff"))
		known := false
		for _, c := range importColumns {
			known = known || c == h
		}
		if !known {
			return nil, fmt.Errorf("line 1: unknown column %q (want %s)", h, strings.Join(importColumns, ", "))
		}
		col[h] = i
	}
	if _, ok := col["device_id"]; !ok {
		return nil, errors.New("line 1: no device_id column")
	}
	var rows []importRow
	var errs []error
	seen := map[string]int{}
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		line, _ := cr.FieldPos(0)
		if err != nil {
			errs = append(errs, err)
			break
		}
		get := func(c string) string {
			if i, ok := col[c]; ok && i < len(rec) {
				return strings.TrimSpace(rec[i])
			}
			return ""
		}
		row := importRow{line: line, dev: registry.NewDevice{ID: get("device_id"), DisplayName: get("display_name"), Type: get("type")}}
		if err := certs.CheckDeviceID(row.dev.ID); err != nil {
			errs = append(errs, fmt.Errorf("line %d: %w", line, err))
		} else if prev, dup := seen[row.dev.ID]; dup {
			errs = append(errs, fmt.Errorf("line %d: device %s is also on line %d", line, row.dev.ID, prev))
		}
		seen[row.dev.ID] = line
		if a := get("attributes"); a != "" {
			if err := (kvList{&row.dev.Attributes}).Set(strings.ReplaceAll(a, ";", ",")); err != nil {
				errs = append(errs, fmt.Errorf("line %d: attributes: %w", line, err))
			}
		}
		if g := get("groups"); g != "" {
			_ = strList{&row.dev.Groups}.Set(strings.ReplaceAll(g, ";", ","))
			for _, id := range row.dev.Groups {
				if err := certs.CheckID(id); err != nil {
					errs = append(errs, fmt.Errorf("line %d: group: %w", line, err))
				}
			}
		}
		if c := get("csr"); c != "" {
			if !filepath.IsAbs(c) {
				c = filepath.Join(base, c)
			}
			b, err := os.ReadFile(c)
			if err != nil {
				errs = append(errs, fmt.Errorf("line %d: csr: %w", line, err))
			}
			row.csr = b
		}
		rows = append(rows, row)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if len(rows) == 0 {
		return nil, errors.New("no devices in the file")
	}
	return rows, nil
}
