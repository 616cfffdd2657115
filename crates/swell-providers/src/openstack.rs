//! The openstack provider: every instance is a Nova server in one project of one
//! OpenStack cloud (region), driven through the REST APIs with a thin `reqwest` client.
//! (Work in progress: the API is published, the calls are being filled in.)

mod config;

pub use config::{
    AppCredentialRef, AuthConfig, DEFAULT_COMPUTE_MICROVERSION, NameOrId, OpenStackConfig,
    OpenStackConfigError, Secret,
};

use crate::{
    CreateRequest, InstanceMetrics, Provider, ProviderCapacity, ProviderError, ProviderInstance,
};
use async_trait::async_trait;
use std::time::Duration;
use swell_core::InstanceId;

/// The openstack provider (see the module documentation).
#[derive(Debug)]
pub struct OpenStackProvider {
    config: OpenStackConfig,
}

impl OpenStackProvider {
    /// Builds the provider; no call is made until the first operation (Keystone is
    /// asked for a token then).
    pub fn new(config: OpenStackConfig) -> Result<Self, OpenStackConfigError> {
        config.validate()?;
        Ok(OpenStackProvider { config })
    }

    /// The configuration it was built with.
    pub fn config(&self) -> &OpenStackConfig {
        &self.config
    }
}

fn todo_err() -> ProviderError {
    ProviderError::Backend("the openstack provider is not finished yet".into())
}

#[async_trait]
impl Provider for OpenStackProvider {
    fn name(&self) -> &str {
        "openstack"
    }

    async fn create(&self, _request: &CreateRequest) -> Result<ProviderInstance, ProviderError> {
        Err(todo_err())
    }

    async fn delete(&self, _id: &InstanceId, _grace: Duration) -> Result<(), ProviderError> {
        Err(todo_err())
    }

    async fn pause(&self, _id: &InstanceId) -> Result<(), ProviderError> {
        Err(todo_err())
    }

    async fn resume(&self, _id: &InstanceId) -> Result<(), ProviderError> {
        Err(todo_err())
    }

    async fn list(&self) -> Result<Vec<ProviderInstance>, ProviderError> {
        Err(todo_err())
    }

    async fn metrics(
        &self,
        _ids: &[InstanceId],
    ) -> Result<Vec<(InstanceId, InstanceMetrics)>, ProviderError> {
        Ok(Vec::new())
    }

    async fn drain(&self, _id: &InstanceId, _drain_timeout: Duration) -> Result<(), ProviderError> {
        Err(todo_err())
    }

    async fn capacity(&self) -> Result<Option<ProviderCapacity>, ProviderError> {
        Err(todo_err())
    }
}
