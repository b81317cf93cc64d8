package main

import (
	"bufio"
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
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/quic-go/quic-go/http3"
)

// The TLS loads: Caddy and Nchan both terminate TLS on loopback with the
// same self-signed ECDSA P-256 certificate, TLS 1.3. Every subscriber is
// a browser of its own: its own connection and a full handshake (no
// session resumption).

// tlsFiles is the certificate both servers use, and the client config
// that trusts it.
type tlsFiles struct {
	cert, key string
	client    *tls.Config
}

// makeTLS writes a self-signed ECDSA P-256 certificate for 127.0.0.1
// under dir.
func makeTLS(dir string) (*tlsFiles, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "bench"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	f := &tlsFiles{cert: filepath.Join(dir, "bench-cert.pem"), key: filepath.Join(dir, "bench-key.pem")}
	if err := os.WriteFile(f.cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(f.key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return nil, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	f.client = &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS13}
	return f, nil
}

// clientTLS is the subscribers' TLS config, offering protos.
func (sw *swarm) clientTLS(protos ...string) *tls.Config {
	c := sw.tgt.TLS.Clone()
	c.NextProtos = protos
	return c
}

// h2Transport makes one HTTP/2 client connection per subscriber
// (NewClientConn: a dial and a full handshake each), trusting the
// servers' certificate.
func (sw *swarm) h2Transport() *http.Transport {
	sw.h2Once.Do(func() {
		var p http.Protocols
		p.SetHTTP2(true)
		sw.h2 = &http.Transport{
			Protocols:       &p,
			TLSClientConfig: sw.clientTLS("h2"),
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				return dialer().DialContext(ctx, network, addr)
			},
			TLSHandshakeTimeout: 15 * time.Second,
		}
	})
	return sw.h2
}

// runSSETLS is one SSE subscriber over HTTP/2 on a TLS connection of its
// own, as a browser's only stream to the site.
func (sw *swarm) runSSETLS(ctx context.Context, s *sub, ready func(error)) error {
	cc, err := sw.h2Transport().NewClientConn(ctx, "https", sw.tgt.TLSAddr)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	s.mu.Lock()
	s.conn = cc
	s.mu.Unlock()
	defer cc.Close()
	return sw.getSSE(ctx, cc, sw.subURLAt("https", sw.tgt.TLSAddr), 2, s, ready)
}

// runSSEH3 is one SSE subscriber over HTTP/3, on a QUIC connection of its
// own.
func (sw *swarm) runSSEH3(ctx context.Context, s *sub, ready func(error)) error {
	tr := &http3.Transport{TLSClientConfig: sw.clientTLS("h3")}
	s.mu.Lock()
	s.conn = tr
	s.mu.Unlock()
	defer tr.Close()
	return sw.getSSE(ctx, tr, sw.subURLAt("https", sw.tgt.TLSAddr), 3, s, ready)
}

// readSSE reads an event stream answer until it ends, recording every
// delivery. The hub says it is live with `retry:`; Nchan subscribes
// before it answers.
func (sw *swarm) readSSE(resp *http.Response, s *sub, ready func(error)) error {
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
		return fmt.Errorf("status %d over %s: %s", resp.StatusCode, resp.Proto, b)
	}
	waitRetry := sw.tgt.Kind == "hub"
	if !waitRetry {
		ready(nil)
	}
	body := bufio.NewReaderSize(resp.Body, 4096)
	for {
		line, err := body.ReadSlice('\n')
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return err
		}
		now := time.Now().UnixNano()
		if p, ok := sseData(line); ok {
			s.record(p, now, &sw.received)
		} else if waitRetry && len(line) >= 6 && string(line[:6]) == "retry:" {
			waitRetry = false
			ready(nil)
		}
	}
}
