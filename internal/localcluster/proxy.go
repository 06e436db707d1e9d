package localcluster

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"sync"

	"k8s.io/client-go/rest"
)

// Proxy is a TCP proxy in front of a cluster's apiserver that a test can
// cut, to give one client a real outage (refused and reset connections)
// while the apiserver, and every other client, carries on. TLS passes
// through untouched, so the client still verifies the apiserver.
type Proxy struct {
	target string
	addr   string
	dial   func(network, addr string) (net.Conn, error)

	mu    sync.Mutex
	ln    net.Listener
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

// NewProxy starts a proxy to c's apiserver on a free loopback port.
func (c *Cluster) NewProxy() (*Proxy, error) {
	u, err := url.Parse(c.Config.Host)
	if err != nil {
		return nil, err
	}
	return NewTCPProxy(u.Host)
}

// NewTCPProxy starts a proxy to target (host:port) on a free loopback port:
// any TCP server, a hub say.
func NewTCPProxy(target string) (*Proxy, error) {
	return newTCPProxy(target, net.Dial)
}

func newTCPProxy(target string, dial func(network, addr string) (net.Conn, error)) (*Proxy, error) {
	p := &Proxy{target: target, dial: dial, conns: map[net.Conn]struct{}{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p.addr = ln.Addr().String()
	p.serve(ln)
	return p, nil
}

// Addr is the proxy's address.
func (p *Proxy) Addr() string { return p.addr }

// SetTarget sends new connections to target (a restarted server on
// another port); open ones are left alone.
func (p *Proxy) SetTarget(target string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.target = target
}

// Config returns cfg pointed at the proxy.
func (p *Proxy) Config(cfg *rest.Config) *rest.Config {
	out := rest.CopyConfig(cfg)
	out.Host = "https://" + p.addr
	return out
}

// Cut closes every open connection and refuses new ones until Restore.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		_ = p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		_ = c.Close()
	}
}

// Restore accepts connections again, on the same address.
func (p *Proxy) Restore() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		return nil
	}
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		return fmt.Errorf("re-listening on %s: %w", p.addr, err)
	}
	p.serveLocked(ln)
	return nil
}

// Close cuts the proxy for good and waits for its goroutines.
func (p *Proxy) Close() {
	p.Cut()
	p.wg.Wait()
}

func (p *Proxy) serve(ln net.Listener) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.serveLocked(ln)
}

func (p *Proxy) serveLocked(ln net.Listener) {
	p.ln = ln
	p.wg.Go(func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return // cut or closed
			}
			p.mu.Lock()
			target := p.target
			p.mu.Unlock()
			out, err := p.dial("tcp", target)
			if err != nil {
				_ = in.Close()
				continue
			}
			if !p.register(ln, in, out) {
				// Accepted before a Cut that has closed every connection
				// since: this one must not outlive the outage.
				_ = in.Close()
				_ = out.Close()
				return
			}
			p.wg.Go(func() { p.pipe(in, out) })
			p.wg.Go(func() { p.pipe(out, in) })
		}
	})
}

// register records in and out for Cut, unless ln is no longer the
// listener (a Cut, maybe a Restore, came after in was accepted).
func (p *Proxy) register(ln net.Listener, in, out net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != ln {
		return false
	}
	p.conns[in], p.conns[out] = struct{}{}, struct{}{}
	return true
}

func (p *Proxy) pipe(dst, src net.Conn) {
	_, err := io.Copy(dst, src)
	if err != nil && !errors.Is(err, net.ErrClosed) {
		_ = err // a reset: the other direction closes too
	}
	_ = dst.Close()
	_ = src.Close()
	p.mu.Lock()
	delete(p.conns, dst)
	delete(p.conns, src)
	p.mu.Unlock()
}
