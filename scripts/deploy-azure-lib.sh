# shellcheck shell=bash
# Shared by azure_trigger/deploy.sh and azure_trigger/deploy-direct.sh (source it after
# scripts/deploy-lib.sh). Why: both modes create the same kind of function app (Flex
# Consumption with identity-based storage by default, or Linux Consumption) on the same
# Python; one copy keeps the two scripts from drifting apart.
#
#   azure_plan_and_login    set PLAN (DT_AZURE_PLAN: flex [default] or consumption),
#                           PY_VERSION (DT_AZURE_PYTHON [3.12], end-of-life checked) and
#                           SUBSCRIPTION; die without az, func or a login.
#   azure_function_app      create (or reuse) the function app APP in RG/LOCATION on STORAGE
#                           for PLAN. Flex: a user-assigned identity APP_IDENTITY ("$APP-storage")
#                           with Storage Blob Data Owner, Queue and Table Data Contributor on
#                           the account, the deployment package in blob container app-package,
#                           and the app settings AzureWebJobsStorage__accountName /
#                           __credential=managedidentity / __clientId instead of a connection
#                           string. Sets APP_PRINCIPAL_ID and APP_CLIENT_ID (the identity's; empty
#                           on Consumption). Needs SUBSCRIPTION.

azure_plan_and_login() {
  PLAN=${DT_AZURE_PLAN:-flex}
  case "$PLAN" in flex|consumption) ;; *) die "DT_AZURE_PLAN must be flex or consumption" ;; esac
  PY_VERSION=${DT_AZURE_PYTHON:-3.12}
  require_cli az "the Azure CLI (az) is not installed: https://learn.microsoft.com/cli/azure/install-azure-cli"
  require_cli func "Azure Functions Core Tools (func) is not installed: https://learn.microsoft.com/azure/azure-functions/functions-run-local (npm i -g azure-functions-core-tools@4)"
  check_runtime azure "$PY_VERSION"
  SUBSCRIPTION=$(query "00000000-0000-0000-0000-000000000000" az account show --query id --output tsv 2>/dev/null) \
    || die "not logged in to Azure: run 'az login' (and 'az account set --subscription ...')"
  [ -n "$SUBSCRIPTION" ] || die "not logged in to Azure: run 'az login'"
}

azure_function_app() {
  local identity_id storage_id role package_container=app-package
  APP_IDENTITY="$APP-storage"
  APP_PRINCIPAL_ID=""
  APP_CLIENT_ID=""
  if [ "$PLAN" = consumption ]; then
    if ! exists az functionapp show --name "$APP" --resource-group "$RG"; then
      run az functionapp create --name "$APP" --resource-group "$RG" --storage-account "$STORAGE" \
        --consumption-plan-location "$LOCATION" --runtime python --runtime-version "$PY_VERSION" \
        --functions-version 4 --os-type Linux --output none
    fi
    return 0
  fi
  # The app's identity and its data-plane roles on the storage account.
  exists az identity show --name "$APP_IDENTITY" --resource-group "$RG" \
    || run az identity create --name "$APP_IDENTITY" --resource-group "$RG" --location "$LOCATION" --output none
  identity_id=$(query "/subscriptions/$SUBSCRIPTION/resourceGroups/$RG/providers/Microsoft.ManagedIdentity/userAssignedIdentities/$APP_IDENTITY" \
    az identity show --name "$APP_IDENTITY" --resource-group "$RG" --query id --output tsv)
  APP_PRINCIPAL_ID=$(query "11111111-1111-1111-1111-111111111111" \
    az identity show --name "$APP_IDENTITY" --resource-group "$RG" --query principalId --output tsv)
  APP_CLIENT_ID=$(query "22222222-2222-2222-2222-222222222222" \
    az identity show --name "$APP_IDENTITY" --resource-group "$RG" --query clientId --output tsv)
  storage_id=$(query "/subscriptions/$SUBSCRIPTION/resourceGroups/$RG/providers/Microsoft.Storage/storageAccounts/$STORAGE" \
    az storage account show --name "$STORAGE" --resource-group "$RG" --query id --output tsv)
  for role in "Storage Blob Data Owner" "Storage Queue Data Contributor" "Storage Table Data Contributor"; do
    run az role assignment create --assignee-object-id "$APP_PRINCIPAL_ID" --assignee-principal-type ServicePrincipal \
      --role "$role" --scope "$storage_id" --output none
  done
  if ! exists az functionapp show --name "$APP" --resource-group "$RG"; then
    run az functionapp create --name "$APP" --resource-group "$RG" --storage-account "$STORAGE" \
      --flexconsumption-location "$LOCATION" --runtime python --runtime-version "$PY_VERSION" \
      --deployment-storage-name "$STORAGE" --deployment-storage-container-name "$package_container" \
      --deployment-storage-auth-type UserAssignedIdentity --deployment-storage-auth-value "$identity_id" \
      --output none
  fi
  run az functionapp identity assign --name "$APP" --resource-group "$RG" --identities "$identity_id" --output none
  # Identity-based host storage: the host, the queue trigger (connection="AzureWebJobsStorage")
  # and azure_trigger/clients.py all read these; no account key in the app's settings.
  run az functionapp config appsettings set --name "$APP" --resource-group "$RG" --output none --settings \
    "AzureWebJobsStorage__accountName=$STORAGE" "AzureWebJobsStorage__credential=managedidentity" \
    "AzureWebJobsStorage__clientId=$APP_CLIENT_ID"
  run az functionapp config appsettings delete --name "$APP" --resource-group "$RG" \
    --setting-names AzureWebJobsStorage --output none
}
