package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"time"
)

// serverName is the DNS name in the server-side peers' certificate, which
// the client-side peers verify.
const serverName = "bench-server.rampart.test"

// certFiles are the PEM files the nginx and HAProxy pairs use. HAProxy wants
// a certificate and its key in one file: the *PEM fields.
type certFiles struct {
	CA                    string
	ServerCert, ServerKey string
	ClientCert, ClientKey string
	ServerPEM, ClientPEM  string
}

// writeCerts creates a CA and a server and a client leaf certificate signed
// by it, all ECDSA P-256, into dir, the way an operator would provision a
// sidecar pair with mutual TLS.
func writeCerts(dir string) (certFiles, error) {
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return certFiles{}, fmt.Errorf("certs: %w", err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "rampart bench CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return certFiles{}, fmt.Errorf("certs: CA: %w", err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return certFiles{}, fmt.Errorf("certs: CA: %w", err)
	}
	f := certFiles{CA: filepath.Join(dir, "ca.crt")}
	if err := writePEM(f.CA, pemBlock("CERTIFICATE", caDER)); err != nil {
		return certFiles{}, err
	}
	leaf := func(name string, serial int64, usage x509.ExtKeyUsage, dns []string) (cert, key, both string, err error) {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return "", "", "", fmt.Errorf("certs: %w", err)
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      pkix.Name{CommonName: name},
			DNSNames:     dns,
			NotBefore:    now.Add(-time.Hour),
			NotAfter:     now.Add(24 * time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{usage},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
		if err != nil {
			return "", "", "", fmt.Errorf("certs: %s: %w", name, err)
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			return "", "", "", fmt.Errorf("certs: %s key: %w", name, err)
		}
		certPEM, keyPEM := pemBlock("CERTIFICATE", der), pemBlock("PRIVATE KEY", keyDER)
		cert, key, both = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key"), filepath.Join(dir, name+".pem")
		if err := writePEM(cert, certPEM); err != nil {
			return "", "", "", err
		}
		if err := writePEM(key, keyPEM); err != nil {
			return "", "", "", err
		}
		if err := writePEM(both, append(append([]byte(nil), certPEM...), keyPEM...)); err != nil {
			return "", "", "", err
		}
		return cert, key, both, nil
	}
	if f.ServerCert, f.ServerKey, f.ServerPEM, err = leaf("server", 2, x509.ExtKeyUsageServerAuth, []string{serverName}); err != nil {
		return certFiles{}, err
	}
	if f.ClientCert, f.ClientKey, f.ClientPEM, err = leaf("client", 3, x509.ExtKeyUsageClientAuth, nil); err != nil {
		return certFiles{}, err
	}
	return f, nil
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

// writePEM writes b readable by its owner only: keys are among these files,
// and nginx and HAProxy read them as the user that starts them.
func writePEM(path string, b []byte) error {
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	return nil
}

// checkMTLS makes sure the server side of a pair at addr speaks only TLS
// 1.3 and serves only clients with a certificate from the CA, so that the
// peers are measured doing the same work as Rampart's tunnel.
func checkMTLS(ctx context.Context, addr string, f certFiles) error {
	caPEM, err := os.ReadFile(f.CA)
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	client, err := tls.LoadX509KeyPair(f.ClientCert, f.ClientKey)
	if err != nil {
		return err
	}
	get := func(cfg *tls.Config) (*http.Response, error) {
		tr := &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true, Proxy: nil}
		defer tr.CloseIdleConnections()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+addr+"/", nil)
		if err != nil {
			return nil, err
		}
		resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Do(req)
		if err != nil {
			return nil, err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp, nil
	}
	base := &tls.Config{RootCAs: roots, ServerName: serverName}
	withCert := base.Clone()
	withCert.Certificates = []tls.Certificate{client}
	resp, err := get(withCert)
	if err != nil {
		return fmt.Errorf("with the client certificate: %w", err)
	}
	if resp.TLS == nil || resp.TLS.Version != tls.VersionTLS13 {
		return errors.New("with the client certificate: not TLS 1.3")
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("with the client certificate: %s, want 200", resp.Status)
	}
	if resp, err := get(base); err == nil && resp.StatusCode == http.StatusOK {
		return errors.New("answers 200 to a client without a certificate")
	}
	tls12 := withCert.Clone()
	tls12.MaxVersion = tls.VersionTLS12
	if _, err := get(tls12); err == nil {
		return errors.New("accepts TLS 1.2")
	}
	return nil
}
