//! The task APIs over the [`Store`]: ListTasks, ListTaskResources, RetryTask, statistics and
//! clusters, each computed from the stored runs and the clock on every call.

use tokio::time::Instant;

use super::*;

impl Store {
    /// ListTasks: one pass over the tasks, TaskInfo built only for the page.
    pub(crate) fn list_tasks(
        &self,
        project: &str,
        q: &ListTasksRequest,
        offset: usize,
        limit: usize,
        now: Instant,
    ) -> Result<ListTasksResponse, Rejection> {
        if let Some(key) = q.sort_key.as_deref().filter(|k| *k != "start_time") {
            return Err(Rejection::Invalid(format!(
                "sort_key {key:?} is not supported (start_time)"
            )));
        }
        let ascending = match q.sort_dir.as_deref() {
            None | Some("desc") => false,
            Some("asc") => true,
            Some(other) => {
                return Err(Rejection::Invalid(format!(
                    "sort_dir {other:?} must be asc or desc"
                )));
            }
        };
        if q.task_status == Some(TaskStatus::Unknown) {
            return Err(Rejection::Invalid(
                "task_status must be ready, running or finished".into(),
            ));
        }
        if q.trigger_type == Some(TriggerType::Unknown) {
            return Err(Rejection::Invalid(
                "trigger_type must be manual or schedule".into(),
            ));
        }
        let wanted_scan_types = q
            .cluster_scan_info
            .as_ref()
            .and_then(|f| f.scan_type_list.as_deref())
            .unwrap_or_default();
        let wanted_file_type = q.iac_scan_info.as_ref().and_then(|f| f.file_type);
        let matches = |t: &&Task| {
            t.project_id == project
                && t.task_type == q.task_type
                && q.task_id.as_deref().is_none_or(|id| t.id == id)
                && q.task_name.as_deref().is_none_or(|n| t.name.contains(n))
                && q.start_create_time.is_none_or(|s| t.created_ms >= s)
                && q.end_create_time.is_none_or(|e| t.created_ms <= e)
                && q.trigger_type.is_none_or(|tt| tt == TriggerType::Manual)
                && wanted_scan_types.iter().all(|st| t.scan_types.contains(st))
                && wanted_file_type.is_none_or(|ft| t.file_type == Some(ft))
                && q.task_status.is_none_or(|s| t.status(now) == s)
        };
        // Tasks are stored in creation order, which is start_time order.
        let ordered: Box<dyn Iterator<Item = &Task>> = if ascending {
            Box::new(self.tasks.iter())
        } else {
            Box::new(self.tasks.iter().rev())
        };
        let mut total = 0usize;
        let mut data_list = Vec::new();
        for task in ordered.filter(matches) {
            if total >= offset && data_list.len() < limit {
                data_list.push(task.info(now, &self.clock));
            }
            total += 1;
        }
        Ok(ListTasksResponse {
            total_num: len_i64(total),
            data_list,
        })
    }

    pub(crate) fn list_resources(
        &self,
        project: &str,
        task_id: &str,
        q: &ListTaskResourcesRequest,
        offset: usize,
        limit: usize,
        now: Instant,
    ) -> Result<ListTaskResourcesResponse, Rejection> {
        let task = self.task(project, task_id)?;
        if q.task_type != task.task_type {
            return Err(Rejection::Invalid(format!(
                "task_type {} does not match task {task_id}, a {} task",
                q.task_type, task.task_type
            )));
        }
        let mut response = ListTaskResourcesResponse {
            total_num: 0,
            cluster_scan_data_list: Vec::new(),
            iac_scan_data_list: Vec::new(),
        };
        let ms = |at: Instant| self.clock.epoch_ms(at);
        match task.task_type {
            TaskType::ClusterScan => {
                let f = q.cluster_scan_info.clone().unwrap_or_default();
                if f.scan_status == Some(ScanStatus::Unknown) {
                    return Err(Rejection::Invalid(
                        "scan_status must be scanning, success or failed".into(),
                    ));
                }
                let rows = task.clusters.iter().filter(|c| {
                    f.scan_status.is_none_or(|s| c.status(now) == s)
                        && f.cluster_name
                            .as_deref()
                            .is_none_or(|n| c.def.name.contains(n))
                        && f.cluster_id.as_deref().is_none_or(|id| c.def.id == id)
                        && f.cluster_type
                            .as_deref()
                            .is_none_or(|ty| c.def.cluster_type == ty)
                });
                let mut total = 0usize;
                for c in rows {
                    if total >= offset && response.cluster_scan_data_list.len() < limit {
                        let status = c.status(now);
                        let start = c.details.iter().map(|(_, r)| r.start).min();
                        let end = c.details.iter().map(|(_, r)| r.end).max();
                        response.cluster_scan_data_list.push(ClusterScanResource {
                            cluster_id: c.def.id.clone(),
                            cluster_name: Some(c.def.name.clone()),
                            cluster_type: Some(c.def.cluster_type.clone()),
                            cluster_version: Some(c.def.version.clone()),
                            scan_status: status,
                            start_time: start.filter(|s| now >= *s).map(ms),
                            end_time: end.filter(|_| status != ScanStatus::Scanning).map(ms),
                            scan_detail_list: c
                                .details
                                .iter()
                                .map(|(st, r)| {
                                    let status = r.status(now);
                                    ScanDetail {
                                        scan_type: *st,
                                        status,
                                        failed_reason: (status == ScanStatus::Failed)
                                            .then(|| CLUSTER_FAILED_REASON.to_string()),
                                    }
                                })
                                .collect(),
                        });
                    }
                    total += 1;
                }
                response.total_num = len_i64(total);
            }
            TaskType::IacScan => {
                let f = q.iac_scan_info.clone().unwrap_or_default();
                if f.scan_status == Some(ScanStatus::Unknown) {
                    return Err(Rejection::Invalid(
                        "scan_status must be scanning, success or failed".into(),
                    ));
                }
                let rows = task.files.iter().filter(|file| {
                    f.scan_status.is_none_or(|s| file.run.status(now) == s)
                        && f.file_name
                            .as_deref()
                            .is_none_or(|n| file.name.contains(n))
                        // Plain files belong to no chart.
                        && f.chart_name.is_none()
                });
                let mut total = 0usize;
                for file in rows {
                    if total >= offset && response.iac_scan_data_list.len() < limit {
                        let status = file.run.status(now);
                        response.iac_scan_data_list.push(IacScanResource {
                            file_id: file.id.clone(),
                            file_name: Some(file.name.clone()),
                            file_type: task.file_type,
                            chart_name: None,
                            file_size: Some(file.size),
                            scan_status: status,
                            failed_reason: (status == ScanStatus::Failed)
                                .then(|| FILE_FAILED_REASON.to_string()),
                            start_time: (now >= file.run.start).then(|| ms(file.run.start)),
                            end_time: (status != ScanStatus::Scanning).then(|| ms(file.run.end)),
                        });
                    }
                    total += 1;
                }
                response.total_num = len_i64(total);
            }
        }
        Ok(response)
    }

    /// RetryTask: the selected scans start again now and finish `finish_after` later, failing
    /// again if their cluster is (still) in the fail set.
    pub(crate) fn retry(
        &mut self,
        project: &str,
        task_id: &str,
        q: &RetryTaskRequest,
        now: Instant,
    ) -> Result<(), Rejection> {
        self.task(project, task_id)?;
        let (finish_after, failing) = (self.finish_after, &self.failing);
        let task = self
            .index
            .get(task_id)
            .and_then(|i| self.tasks.get_mut(*i))
            .ok_or_else(|| Rejection::NotFound(format!("task {task_id} does not exist")))?;
        if task.task_type != TaskType::ClusterScan {
            return Err(Rejection::Invalid(format!(
                "task {task_id} is an {} task; only cluster_scan tasks can be retried",
                task.task_type
            )));
        }
        // Decide everything first, so a bad entry changes nothing.
        let mut selected: Vec<(usize, Vec<ScanType>)> = Vec::new();
        match q.cluster_scan_info.range_type {
            RetryRangeType::AllFailedCluster => {
                for (i, c) in task.clusters.iter().enumerate() {
                    let failed: Vec<ScanType> = c
                        .details
                        .iter()
                        .filter(|(_, r)| r.status(now) == ScanStatus::Failed)
                        .map(|(st, _)| *st)
                        .collect();
                    if !failed.is_empty() {
                        selected.push((i, failed));
                    }
                }
            }
            RetryRangeType::SpecificCluster => {
                for entry in q.cluster_scan_info.cluster_info_list.iter().flatten() {
                    let (i, c) = task
                        .clusters
                        .iter()
                        .enumerate()
                        .find(|(_, c)| c.def.id == entry.cluster_id)
                        .ok_or_else(|| {
                            Rejection::Invalid(format!(
                                "cluster {} is not part of task {task_id}",
                                entry.cluster_id
                            ))
                        })?;
                    if c.status(now) == ScanStatus::Scanning {
                        return Err(Rejection::Invalid(format!(
                            "cluster {} of task {task_id} is still scanning",
                            entry.cluster_id
                        )));
                    }
                    let types = match &entry.scan_type_list {
                        Some(types) if !types.is_empty() => types.clone(),
                        _ => task.scan_types.clone(),
                    };
                    if let Some(st) = types.iter().find(|st| !task.scan_types.contains(st)) {
                        return Err(Rejection::Invalid(format!(
                            "scan type {} was not part of task {task_id}",
                            serde_json::to_value(st)
                                .ok()
                                .and_then(|v| v.as_str().map(str::to_string))
                                .unwrap_or_default()
                        )));
                    }
                    selected.push((i, types));
                }
            }
        }
        for (i, types) in selected {
            if let Some(c) = task.clusters.get_mut(i) {
                let fails = failing.contains(&c.def.id);
                for (st, run) in c.details.iter_mut() {
                    if types.contains(st) {
                        *run = Run {
                            start: now,
                            end: now + finish_after,
                            fails,
                        };
                    }
                }
            }
        }
        Ok(())
    }

    pub(crate) fn statistics(
        &self,
        project: &str,
        task_type: TaskType,
        now: Instant,
    ) -> TaskStatistics {
        let mut total = 0usize;
        let mut running = 0usize;
        let mut last = None;
        for t in self.tasks.iter().rev() {
            if t.project_id != project || t.task_type != task_type {
                continue;
            }
            last = last.or(Some(t.created_ms));
            total += 1;
            if t.status(now) == TaskStatus::Running {
                running += 1;
            }
        }
        TaskStatistics {
            total_num: len_i64(total),
            running_num: Some(len_i64(running)),
            last_task_start_time: last,
        }
    }

    pub(crate) fn clusters(
        &self,
        name: Option<&str>,
        offset: usize,
        limit: usize,
    ) -> ListClustersResponse {
        let matching: Vec<&ClusterDef> = self
            .clusters
            .iter()
            .filter(|c| name.is_none_or(|n| c.name.contains(n)))
            .collect();
        ListClustersResponse {
            total_num: Some(len_i64(matching.len())),
            cluster_info_list: matching
                .into_iter()
                .skip(offset)
                .take(limit)
                .map(|c| ClusterInfo {
                    cluster_id: c.id.clone(),
                    cluster_name: Some(c.name.clone()),
                    cluster_type: Some(c.cluster_type.clone()),
                    status: Some(c.status.clone()),
                    version: Some(c.version.clone()),
                })
                .collect(),
        }
    }
}
