package app

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/anchorage-dev/anchorage/pkg/workload"
)

// maxAnswer bounds what the client reads of an answer.
const maxAnswer = 4 << 10

// Client is the client mode: it calls the server's listeners, each call a
// new connection, so that every call shows a full handshake with the
// certificates and trust bundles projected at that moment.
type Client struct {
	opts *Options
	log  logr.Logger
	src  *workload.Source

	spiffe, dns *http.Client
}

// Exchange is the outcome of one call.
type Exchange struct {
	// Over is "SPIFFE mTLS" or "TLS (service-dns)".
	Over    string
	Address string
	// Server is who the client verified: the server's SPIFFE ID, or the
	// DNS name its certificate was verified for.
	Server   string
	Answer   string
	Duration time.Duration
	Err      error
}

// NewClient loads the client's projected files. opts must be valid.
func NewClient(ctx context.Context, opts *Options) (*Client, error) {
	log := logr.FromContextOrDiscard(ctx).WithValues("client", opts.Name)
	c := &Client{opts: opts, log: log}
	var (
		policy                  *peerPolicy
		credential              string
		localDNS, clustersetDNS []string
	)
	if opts.ServerAddress != "" {
		var err error
		if policy, err = opts.clientPolicy(); err != nil {
			return nil, err
		}
		credential = SPIFFECredentialFile
	}
	if opts.DNSServerAddress != "" {
		localDNS, clustersetDNS = opts.LocalDNSTrustBundles, opts.ClustersetDNSTrustBundles
	}
	var tds []spiffeid.TrustDomain
	if policy != nil {
		tds = policy.trustDomains()
	}
	src, err := openSource(ctx, opts, log, credential, tds, localDNS, clustersetDNS)
	if err != nil {
		return nil, err
	}
	c.src = src
	if policy != nil {
		svid, err := src.GetX509SVID()
		if err != nil {
			_ = src.Close()
			return nil, fmt.Errorf("%s in %s: %w; project an anchorage.dev/spiffe podCertificate there", SPIFFECredentialFile, opts.CredentialsDir, err)
		}
		c.spiffe = httpClient(src.ClientConfig(policy.authorize), opts.Timeout)
		log.Info("Calling over SPIFFE mTLS", "address", opts.ServerAddress, "id", svid.ID.String(),
			"expectedIDs", joinStrings(policy.ids), "expectedTrustDomains", joinStrings(policy.tds))
	}
	if opts.DNSServerAddress != "" {
		c.dns = httpClient(src.DNSClientConfig(opts.dnsServerName()), opts.Timeout)
		_, bundles := opts.dnsTrustBundleFlag()
		log.Info("Calling over TLS, verifying the server's service-dns certificate", "address", opts.DNSServerAddress,
			"serverName", opts.dnsServerName(), "trustBundles", bundles)
	}
	return c, nil
}

// httpClient makes a new connection for every request: the demo is about
// handshakes, and a kept-alive connection would hide a rotation.
func httpClient(cfg *tls.Config, timeout time.Duration) *http.Client {
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			TLSClientConfig:     cfg,
			DisableKeepAlives:   true,
			TLSHandshakeTimeout: timeout,
			Proxy:               nil, // cluster-internal addresses: never through a proxy
		},
	}
}

// Round calls each configured listener once and logs each exchange.
func (c *Client) Round(ctx context.Context) []Exchange {
	var out []Exchange
	if c.spiffe != nil {
		out = append(out, c.call(ctx, c.spiffe, "SPIFFE mTLS", c.opts.ServerAddress, func(cs *tls.ConnectionState) string { return peerSPIFFEID(cs) }))
	}
	if c.dns != nil {
		name := c.opts.dnsServerName()
		out = append(out, c.call(ctx, c.dns, "TLS (service-dns)", c.opts.DNSServerAddress, func(*tls.ConnectionState) string { return name }))
	}
	return out
}

func (c *Client) call(ctx context.Context, hc *http.Client, over, addr string, verified func(*tls.ConnectionState) string) Exchange {
	ex := Exchange{Over: over, Address: addr}
	start := time.Now()
	ex.Answer, ex.Server, ex.Err = get(ctx, hc, "https://"+addr+"/", verified)
	ex.Duration = time.Since(start)
	var op *net.OpError
	if errors.As(ex.Err, &op) && op.Op == "remote error" {
		// A TLS alert carries no reason: the server logged it.
		ex.Err = fmt.Errorf("the server refused the handshake (its log says why; is this client's SPIFFE ID allowed there?): %w", ex.Err)
	}
	if ex.Err != nil {
		c.log.Error(ex.Err, "Exchange failed", "over", over, "address", addr)
	} else {
		c.log.Info("Exchange", "over", over, "address", addr, "server", ex.Server, "answer", ex.Answer, "duration", ex.Duration.Round(time.Millisecond).String())
	}
	return ex
}

func get(ctx context.Context, hc *http.Client, url string, verified func(*tls.ConnectionState) string) (answer, server string, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", "", err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return "", "", err
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return "", "", fmt.Errorf("reading the answer: %w", err)
	}
	answer = strings.TrimSpace(string(body))
	if resp.StatusCode != http.StatusOK {
		return "", "", fmt.Errorf("the server answered %s: %s", resp.Status, answer)
	}
	return answer, verified(resp.TLS), nil
}

// Run calls the server every --interval until ctx ends, or for --count
// rounds. With --count it fails if any exchange failed, also when stopped
// (SIGTERM) before the last round; an exchange cut short by the stop is
// not a failure.
func (c *Client) Run(ctx context.Context) error {
	var rounds, exchanges, failed int
	t := time.NewTicker(c.opts.Interval)
	defer t.Stop()
	result := func() error {
		if c.opts.Count > 0 && failed > 0 {
			return fmt.Errorf("%d of %d exchanges failed (the log above says why)", failed, exchanges)
		}
		return nil
	}
	for {
		for _, ex := range c.Round(ctx) {
			if errors.Is(ex.Err, context.Canceled) && ctx.Err() != nil {
				continue // stopped mid-exchange
			}
			exchanges++
			if ex.Err != nil {
				failed++
			}
		}
		rounds++
		if c.opts.Count > 0 && rounds >= c.opts.Count {
			return result()
		}
		select {
		case <-ctx.Done():
			return result()
		case <-t.C:
		}
	}
}

// Healthy reports an error while the client's certificate is not valid
// now.
func (c *Client) Healthy() error { return healthy(time.Now(), c.src) }

// Close stops watching the files.
func (c *Client) Close() { _ = c.src.Close() }
