// Package deploy holds Haru's deployment files: the Dockerfile, the Kubernetes manifests,
// the NATS, Caddy and Prometheus configuration and the Grafana dashboards that
// docker-compose.yml at the repository root uses. It has no code; its test keeps those
// files in step with the code (targets, HARU_* variables, ports and metric names).
package deploy
