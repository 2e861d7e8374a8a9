//! `moby.filesync.v1.Auth`: the registry credentials the builder asks for when it pulls a base
//! image, as the docker CLI and linuxkit answer (`--registry-creds`, the docker config and its
//! credential helpers; [`crate::registry::credentials`]).
//!
//! Only `Credentials` is served: BuildKit asks `GetTokenAuthority` first and, told it is not
//! implemented, does the token handshake itself with the username and secret it gets here.
//! A registry lkpkg has no credentials for gets an empty answer (anonymous).

use std::sync::Arc;

use bollard_buildkit_proto::moby::filesync::v1::auth_server::Auth;
use bollard_buildkit_proto::moby::filesync::v1::{
    CredentialsRequest, CredentialsResponse, FetchTokenRequest, FetchTokenResponse,
    GetTokenAuthorityRequest, GetTokenAuthorityResponse, VerifyTokenAuthorityRequest,
    VerifyTokenAuthorityResponse,
};
use tonic::{Request, Response, Status};

use crate::registry::{Credential, Credentials};

/// The session's answers about registry credentials.
#[derive(Debug, Clone, Default)]
pub(crate) struct RegistryAuth(pub Option<Arc<Credentials>>);

#[tonic::async_trait]
impl Auth for RegistryAuth {
    async fn credentials(
        &self,
        request: Request<CredentialsRequest>,
    ) -> Result<Response<CredentialsResponse>, Status> {
        let host = request.into_inner().host;
        let Some(credentials) = self.0.clone() else {
            return Ok(Response::new(CredentialsResponse::default()));
        };
        // A credential helper is a program: run it off the runtime's threads.
        let found = tokio::task::spawn_blocking(move || credentials.lookup(&host))
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        let answer = match found {
            Ok((Credential::Basic { username, password }, _)) => CredentialsResponse {
                username,
                secret: password.expose().to_owned(),
            },
            // BuildKit takes a secret without a username as an identity token.
            Ok((Credential::Bearer(token), _)) => CredentialsResponse {
                username: String::new(),
                secret: token.expose().to_owned(),
            },
            Ok((Credential::Anonymous, _)) => CredentialsResponse::default(),
            // The message names the helper and the registry, never a secret.
            Err(e) => return Err(Status::unavailable(e.to_string())),
        };
        Ok(Response::new(answer))
    }

    async fn fetch_token(
        &self,
        _request: Request<FetchTokenRequest>,
    ) -> Result<Response<FetchTokenResponse>, Status> {
        Err(Status::unimplemented("lkpkg answers Credentials only"))
    }

    async fn get_token_authority(
        &self,
        _request: Request<GetTokenAuthorityRequest>,
    ) -> Result<Response<GetTokenAuthorityResponse>, Status> {
        Err(Status::unimplemented("lkpkg answers Credentials only"))
    }

    async fn verify_token_authority(
        &self,
        _request: Request<VerifyTokenAuthorityRequest>,
    ) -> Result<Response<VerifyTokenAuthorityResponse>, Status> {
        Err(Status::unimplemented("lkpkg answers Credentials only"))
    }
}
