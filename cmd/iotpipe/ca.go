package main

// `iotpipe ca init|server|client`: the certificate authority of the
// fleet's MQTT identities (internal/certs). The CA key never leaves
// --ca-dir and is never printed.

import (
	"context"
	"crypto/ecdsa"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"time"

	"github.com/iotpipe/iotpipe/internal/certs"
	"github.com/iotpipe/iotpipe/registry"
)

const caSummary = "the certificate authority of device identities: ca init, ca server (broker certificate), ca client (a service's identity)"

const caUsage = `Usage: iotpipe ca <init|server|client> [flags]

  init     create the CA (ca.crt, ca.key 0600) and an empty CRL (crl.pem) in --ca-dir
  server   issue the broker's server certificate: --dns and/or --ip names, into --out
  client   issue a client certificate for a service (e.g. the bridge, CN iotpipe-bridge)
           that is not a device: it is not registered, into --out
  setup    all of it at once, keeping what is current: the CA if missing, the broker's
           certificate, service identities and simulated devices' certificates
           (what docker compose runs on every 'up')

Devices get their certificates with 'iotpipe devices add'. Run
'iotpipe ca <command> --help' for the flags.
`

func runCA(ctx context.Context, env Env, args []string) error {
	if help, err := groupHelp(env, args, caUsage, "which ca command? init, server or client"); help {
		return err
	}
	switch args[0] {
	case "init":
		return runCAInit(env, args[1:])
	case "server":
		return runCAServer(env, args[1:])
	case "client":
		return runCAClient(env, args[1:])
	case "setup":
		return runCASetup(env, args[1:])
	}
	return &UsageError{fmt.Errorf("unknown ca command %q: want init, server, client or setup", args[0])}
}

// groupHelp prints usage when a command group (ca, devices) is called
// without a command or with -h/--help, and says whether it did; err is a
// usage error saying which when the command is missing.
func groupHelp(env Env, args []string, usage, which string) (help bool, err error) {
	if len(args) > 0 && args[0] != "-h" && args[0] != "--help" && args[0] != "-help" {
		return false, nil
	}
	fmt.Fprint(env.Stdout, usage)
	if len(args) == 0 {
		return true, &UsageError{errors.New(which)}
	}
	return true, nil
}

// caDirFlag binds --ca-dir.
func caDirFlag(f *cmdFlags, p *string) {
	f.String(p, "ca-dir", "", "folder of the CA: ca.crt, ca.key (mode 0600) and crl.pem; keep it off the devices and off images")
}

func needCADir(dir string) error {
	if dir == "" {
		return settingErr("ca-dir", "", errors.New("not set: give the CA's folder (iotpipe ca init creates it)"))
	}
	return nil
}

func loadCA(dir string) (*certs.CA, error) {
	if err := needCADir(dir); err != nil {
		return nil, err
	}
	ca, err := certs.Load(dir)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", settingName("ca-dir"), err)
	}
	return ca, nil
}

func settingName(flagName string) string { return "--" + flagName + " (" + EnvName(flagName) + ")" }

func validityFlag(f *cmdFlags, p *time.Duration, def time.Duration, what string) {
	f.Duration(p, "validity", def, "how long the "+what+" is valid (e.g. 17520h = 2 years)")
}

func checkValidity(d time.Duration) error {
	if d < time.Minute {
		return settingErr("validity", d.String(), errors.New("must be at least 1m"))
	}
	return nil
}

func runCAInit(env Env, args []string) error {
	var dir, cn string
	var validity time.Duration
	f := newCmdFlags(env, "iotpipe ca init", `Create a certificate authority in --ca-dir: ca.crt (give it to every device and
to the broker's cafile), ca.key (mode 0600; it signs every certificate, keep it
secret and backed up) and crl.pem, an empty revocation list for the broker's
crlfile. Refuses to overwrite an existing CA. Prints the paths, never the key.`)
	caDirFlag(f, &dir)
	f.String(&cn, "cn", "iotpipe CA", "common name of the CA certificate")
	validityFlag(f, &validity, certs.DefaultCAValidity, "CA certificate")
	if err := f.Parse(args, env.Stdout); err != nil {
		return usageErr(err)
	}
	if err := errors.Join(needCADir(dir), checkValidity(validity)); err != nil {
		return &UsageError{err}
	}
	ca, err := certs.Init(dir, cn, validity)
	if err != nil {
		return fmt.Errorf("%s: %w", settingName("ca-dir"), err)
	}
	crl := filepath.Join(dir, certs.CRLFile)
	if err := registry.WriteCRL(ca, nil, crl, certs.DefaultCRLValidity); err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "ca: created %s (valid until %s), %s (mode 0600) and an empty CRL %s\n",
		filepath.Join(dir, certs.CACertFile), ca.Cert.NotAfter.UTC().Format(time.DateOnly), filepath.Join(dir, certs.CAKeyFile), crl)
	return nil
}

func runCAServer(env Env, args []string) error {
	var dir, out, name string
	var dns, ips []string
	var validity time.Duration
	f := newCmdFlags(env, "iotpipe ca server", `Issue a server certificate for the MQTT broker (extended key usage serverAuth
only), with every --dns and --ip as a subject alternative name: clients check
the broker's name against them (bridge --mqtt-server-name). Writes
<out>/<name>.crt and <out>/<name>.key (0600) with a new ECDSA P-256 key.`)
	caDirFlag(f, &dir)
	f.Flags.List(&dns, "dns", "comma-separated DNS names of the broker, e.g. localhost,mqtt.example.com")
	f.Flags.List(&ips, "ip", "comma-separated IP addresses of the broker, e.g. 127.0.0.1")
	f.String(&out, "out", ".", "folder the certificate and key are written to")
	f.String(&name, "name", "server", "file name (without .crt/.key)")
	validityFlag(f, &validity, certs.DefaultServerValidity, "server certificate")
	if err := f.Parse(args, env.Stdout); err != nil {
		return usageErr(err)
	}
	var errs []error
	var parsed []net.IP
	for _, s := range ips {
		ip := net.ParseIP(s)
		if ip == nil {
			errs = append(errs, settingErr("ip", s, errors.New("not an IP address")))
		}
		parsed = append(parsed, ip)
	}
	if len(dns) == 0 && len(ips) == 0 {
		errs = append(errs, fmt.Errorf("%s and %s: give at least one name of the broker", settingName("dns"), settingName("ip")))
	}
	if name == "" || strings.ContainsAny(name, "/\\") {
		errs = append(errs, settingErr("name", name, errors.New("must be a plain file name")))
	}
	errs = append(errs, checkValidity(validity), needCADir(dir))
	if err := errors.Join(errs...); err != nil {
		return &UsageError{err}
	}
	iss, cp, kp, err := issueKeyPair(dir, out, name, func(ca *certs.CA) (*certs.Issued, *ecdsa.PrivateKey, error) {
		return ca.IssueServer(dns, parsed, validity)
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "ca: server certificate %s (names %s, serial %s, valid until %s), key %s (mode 0600)\n",
		cp, strings.Join(append(append([]string{}, dns...), ips...), ","), iss.Serial(), iss.Cert.NotAfter.UTC().Format(time.DateOnly), kp)
	return nil
}

func runCAClient(env Env, args []string) error {
	cn, args, perr := positional(args, "the certificate's common name, e.g. iotpipe-bridge")
	var dir, out string
	var validity time.Duration
	f := newCmdFlags(env, "iotpipe ca client <common-name>", `Issue a client certificate (extended key usage clientAuth only) for a service
that connects to the broker but is not a device, e.g. the bridge: its CN is its
MQTT user name in the broker's ACL (the bridge's is iotpipe-bridge). It is not
recorded in the registry; devices use 'iotpipe devices add'. Writes
<out>/<common-name>.crt and .key (0600); issuing again into the same folder
replaces them, which a running bridge picks up on its next reconnect.`)
	caDirFlag(f, &dir)
	f.String(&out, "out", ".", "folder the certificate and key are written to")
	validityFlag(f, &validity, certs.DefaultClientValidity, "certificate")
	if err := parseAfterPositional(env, f, args, perr); err != nil {
		return err
	}
	if err := errors.Join(certs.CheckID(cn), checkValidity(validity), needCADir(dir)); err != nil {
		return &UsageError{err}
	}
	iss, cp, kp, err := issueKeyPair(dir, out, cn, func(ca *certs.CA) (*certs.Issued, *ecdsa.PrivateKey, error) {
		return ca.IssueClientKey(cn, validity)
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "ca: client certificate %s (CN %s, serial %s, valid until %s), key %s (mode 0600)\n",
		cp, cn, iss.Serial(), iss.Cert.NotAfter.UTC().Format(time.DateOnly), kp)
	return nil
}

// issueKeyPair loads the CA of --ca-dir, issues a certificate with a new
// key by issue and writes both into out as <name>.crt and <name>.key
// (certs.WriteKeyPair).
func issueKeyPair(dir, out, name string, issue func(*certs.CA) (*certs.Issued, *ecdsa.PrivateKey, error)) (iss *certs.Issued, certPath, keyPath string, err error) {
	ca, err := loadCA(dir)
	if err != nil {
		return nil, "", "", err
	}
	iss, key, err := issue(ca)
	if err != nil {
		return nil, "", "", err
	}
	certPath, keyPath, err = certs.WriteKeyPair(out, name, iss.PEM, key)
	if err != nil {
		return nil, "", "", fmt.Errorf("%s: %w", settingName("out"), err)
	}
	return iss, certPath, keyPath, nil
}

// positional takes the leading argument that is not a flag (a device id,
// a file): "iotpipe devices add ID [flags]". The flags follow it.
func positional(args []string, what string) (string, []string, error) {
	if len(args) == 0 {
		return "", args, &UsageError{fmt.Errorf("missing %s (it comes first, before the flags)", what)}
	}
	if strings.HasPrefix(args[0], "-") {
		for _, a := range args {
			if a == "-h" || a == "--help" || a == "-help" {
				return "", args, ErrHelp
			}
		}
		return "", args, &UsageError{fmt.Errorf("missing %s (it comes first, before the flags)", what)}
	}
	return args[0], args[1:], nil
}

// parseAfterPositional parses the flags of a command that takes a
// positional argument; perr is positional's error: -h/--help without that
// argument still shows the help.
func parseAfterPositional(env Env, f *cmdFlags, args []string, perr error) error {
	if perr != nil {
		if !errors.Is(perr, ErrHelp) {
			return perr
		}
		args = []string{"--help"}
	}
	if err := f.Parse(args, env.Stdout); err != nil {
		return usageErr(err)
	}
	return nil
}
