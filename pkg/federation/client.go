package federation

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// Client calls the hub's agent API for one member cluster.
type Client struct {
	// HubURL is the hub's external URL.
	HubURL string
	// Cluster is this member's name.
	Cluster string
	// HTTP carries the hub's CA; nil means http.DefaultClient.
	HTTP *http.Client
	// Token returns a service-account token of the agent with the hub URL
	// as audience (a projected token file, or the TokenRequest API).
	Token func(ctx context.Context) (string, error)
}

// StatusError is a non-2xx answer of the hub.
type StatusError struct {
	Code    int
	Message string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("hub answered %d %s: %s", e.Code, http.StatusText(e.Code), e.Message)
}

// IsStatus reports whether err is a hub answer with that status code.
func IsStatus(err error, code int) bool {
	var se *StatusError
	return errors.As(err, &se) && se.Code == code
}

// Join presents the join token and the cluster's JWKS.
func (c *Client) Join(ctx context.Context, req JoinRequest) error {
	_, _, err := c.do(ctx, http.MethodPost, JoinPath, req, false)
	return err
}

// Report sends the cluster's anchors and JWKS, authenticated with the
// agent's service-account token.
func (c *Client) Report(ctx context.Context, r Report) error {
	_, _, err := c.do(ctx, http.MethodPut, ReportPath, r, true)
	return err
}

// Bundles long-polls the member's bundle set: it returns as soon as the
// hub's sequence differs from after, or (nil, nil) when the hub had nothing
// new within its poll time. Bound ctx above the hub's poll time (60 s).
func (c *Client) Bundles(ctx context.Context, after int64) (*BundleSet, error) {
	code, raw, err := c.do(ctx, http.MethodGet, BundlesPath+"?after="+strconv.FormatInt(after, 10), nil, true)
	if err != nil || code == http.StatusNoContent {
		return nil, err
	}
	var set BundleSet
	if err := json.Unmarshal(raw, &set); err != nil {
		return nil, fmt.Errorf("decoding the hub's bundle set: %w", err)
	}
	return &set, nil
}

// Ack confirms the bundle set of that sequence and digest is applied.
func (c *Client) Ack(ctx context.Context, a Ack) error {
	_, _, err := c.do(ctx, http.MethodPost, AckPath, a, true)
	return err
}

// do makes one call; a nil body sends none.
func (c *Client) do(ctx context.Context, method, path string, body any, auth bool) (int, []byte, error) {
	hasBody := body != nil
	var rd io.Reader
	if hasBody {
		data, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		rd = bytes.NewReader(data)
	}
	u := strings.TrimSuffix(c.HubURL, "/") + APIPrefix + url.PathEscape(c.Cluster) + "/" + path
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return 0, nil, err
	}
	if hasBody {
		req.Header.Set("Content-Type", "application/json")
	}
	if auth {
		tok, err := c.Token(ctx)
		if err != nil {
			return 0, nil, fmt.Errorf("getting the agent's token for the hub: %w", err)
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("calling the hub at %s: %w", c.HubURL, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, MaxAnswerBytes+1))
	if err != nil {
		return 0, nil, fmt.Errorf("reading the hub's answer: %w", err)
	}
	if len(raw) > MaxAnswerBytes {
		return 0, nil, fmt.Errorf("the hub's answer is over %d bytes", MaxAnswerBytes)
	}
	if resp.StatusCode/100 == 2 {
		return resp.StatusCode, raw, nil
	}
	var e Error
	if json.Unmarshal(raw, &e) != nil || e.Error == "" {
		e.Error = strings.TrimSpace(string(raw))
	}
	return resp.StatusCode, nil, &StatusError{Code: resp.StatusCode, Message: e.Error}
}
