package kubeletsim

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// File names used by PodCertificateSource.
const (
	CredentialBundleFile = "credentialbundle.pem"
	KeyFile              = "tls.key"
	CertificateChainFile = "tls.crt"
)

// VolumeName is the projected volume NewPod creates.
const VolumeName = "pod-identity"

// NewPod returns a pod (not yet created) running as serviceAccount with one
// projected volume, VolumeName, made of sources. Pass it to Sim.RunPod.
func NewPod(namespace, name, serviceAccount string, sources ...corev1.VolumeProjection) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, Labels: map[string]string{"app": name}},
		Spec: corev1.PodSpec{
			ServiceAccountName: serviceAccount,
			Containers:         []corev1.Container{{Name: "app", Image: "kubeletsim.invalid/app:latest"}},
			Volumes: []corev1.Volume{{
				Name:         VolumeName,
				VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: sources}},
			}},
		},
	}
}

// PodCertificateSource returns a podCertificate source for signer and keyType
// that writes all three files (CredentialBundleFile, KeyFile,
// CertificateChainFile).
func PodCertificateSource(signer, keyType string) corev1.VolumeProjection {
	return corev1.VolumeProjection{PodCertificate: &corev1.PodCertificateProjection{
		SignerName:           signer,
		KeyType:              keyType,
		CredentialBundlePath: CredentialBundleFile,
		KeyPath:              KeyFile,
		CertificateChainPath: CertificateChainFile,
	}}
}

// TrustBundleSource returns a clusterTrustBundle source selecting signer's
// bundles by selector (nil matches nothing, empty matches all), written to path.
func TrustBundleSource(signer string, selector *metav1.LabelSelector, path string) corev1.VolumeProjection {
	return corev1.VolumeProjection{ClusterTrustBundle: &corev1.ClusterTrustBundleProjection{
		SignerName:    &signer,
		LabelSelector: selector,
		Path:          path,
	}}
}
