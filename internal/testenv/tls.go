package testenv

import (
	"os"
	"testing"
)

// MQTTTLS is the mutual-TLS side of a broker started by scripts/services.sh:
// the TLS listener, the local CA and the bridge's client identity, and the
// files `iotpipe devices` rewrites on a revocation.
type MQTTTLS struct {
	URL            string // mqtts://127.0.0.1:port
	CAFile         string // the CA certificate (clients check the broker with it)
	BridgeCertFile string // client certificate CN=iotpipe-bridge
	BridgeKeyFile  string
	CADir          string // the CA (ca.crt, ca.key, crl.pem): issue test certificates with it
	ACLFile        string // the broker's acl_file
	PIDFile        string // the broker's pid, for SIGHUP
}

// MQTTTLS returns the TLS settings of the private broker (started with
// "mqtt").
func (p *Private) MQTTTLS(t testing.TB) MQTTTLS {
	t.Helper()
	v := p.vars()
	m := MQTTTLS{
		URL:            v["IOTPIPE_MQTT_TLS_URL"],
		CAFile:         v["IOTPIPE_MQTT_TLS_CA_FILE"],
		BridgeCertFile: v["IOTPIPE_MQTT_TLS_BRIDGE_CERT_FILE"],
		BridgeKeyFile:  v["IOTPIPE_MQTT_TLS_BRIDGE_KEY_FILE"],
		CADir:          v["IOTPIPE_CA_DIR"],
		ACLFile:        v["IOTPIPE_MQTT_ACL_FILE"],
		PIDFile:        v["IOTPIPE_MQTT_BROKER_PID_FILE"],
	}
	if m.URL == "" || m.CADir == "" {
		t.Fatal("scripts/services.sh env gives no IOTPIPE_MQTT_TLS_URL / IOTPIPE_CA_DIR: the broker has no TLS listener")
	}
	return m
}

// LoadMQTTTLS returns the TLS settings of the shared broker from the
// environment (eval "$(scripts/services.sh env)"); the test fails when the
// shared services predate the TLS listener.
func LoadMQTTTLS(t testing.TB) MQTTTLS {
	t.Helper()
	m := MQTTTLS{
		URL:            os.Getenv("IOTPIPE_MQTT_TLS_URL"),
		CAFile:         os.Getenv("IOTPIPE_MQTT_TLS_CA_FILE"),
		BridgeCertFile: os.Getenv("IOTPIPE_MQTT_TLS_BRIDGE_CERT_FILE"),
		BridgeKeyFile:  os.Getenv("IOTPIPE_MQTT_TLS_BRIDGE_KEY_FILE"),
		CADir:          os.Getenv("IOTPIPE_CA_DIR"),
		ACLFile:        os.Getenv("IOTPIPE_MQTT_ACL_FILE"),
		PIDFile:        os.Getenv("IOTPIPE_MQTT_BROKER_PID_FILE"),
	}
	if m.URL == "" || m.CADir == "" {
		t.Fatal(`IOTPIPE_MQTT_TLS_URL / IOTPIPE_CA_DIR are not set: restart the services with this checkout's scripts/services.sh and eval "$(scripts/services.sh env)"`)
	}
	return m
}
