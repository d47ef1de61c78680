# Scenario 4 of the bench (scenarios/sdk.rs): one CreateTask with the Python SDK, as a user
# script would. Usage: create_task.py ENDPOINT PROJECT_ID, key in HUAWEICLOUD_SDK_AK/_SK.
import os, sys
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.http.http_config import HttpConfig
from huaweicloudsdkhss.v5 import (CreateTaskRequest, CreateTaskRequestBody,
                                  CreateTaskRequestBodyClusterScanInfo, HssClient)

client = (HssClient.new_builder()
          .with_http_config(HttpConfig.get_default_config())
          .with_credentials(BasicCredentials(os.environ["HUAWEICLOUD_SDK_AK"],
                                             os.environ["HUAWEICLOUD_SDK_SK"], sys.argv[2]))
          .with_endpoints([sys.argv[1]])
          .build())
info = CreateTaskRequestBodyClusterScanInfo(scan_type_list=["cluster_vul", "benchmark"],
                                            range_type="all_cluster")
resp = client.create_task(CreateTaskRequest(body=CreateTaskRequestBody(
    task_type="cluster_scan", cluster_scan_info=info)))
print(resp.task_id)
